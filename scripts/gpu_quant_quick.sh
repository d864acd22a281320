source scripts/gpu_common.sh
gpu_build
gpu_tests block_linear_test cuda_backend_test gpu_model_test
gpu_copy_ceiling
for t in "" :Q4_K :Q4_0 :Q6_K :Q8_0; do
  $K bench --device cuda --model random:llama-3-8b$t --kernel linear --batch 1 --iters 20 2>&1 | grep -E "gate_proj|k_proj|all of"
done
timeout 200 ncu --clock-control none -k regex:BlockGemv --launch-skip 32 -c 1 --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
  $K bench --device cuda --model random:llama-3-8b:Q4_K --kernel linear --batch 1 --iters 5 > "$OUT/gemv_ncu.txt" 2>&1
grep -E "Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Grid Size|Waves" "$OUT/gemv_ncu.txt" | head
for t in :Q4_K :Q4_0 :Q6_K :Q8_0; do
  $K bench --device cuda --model random:llama-3-8b$t --input-len 512 --output-len 128 --num-prompts 1 --max-seqs 1 2>&1 | grep -E "^\| decode"
done
