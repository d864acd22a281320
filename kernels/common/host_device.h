// KVS_HOST_DEVICE marks inline functions that host (g++) and device (nvcc) code share.
#pragma once

#if defined(__CUDACC__)
#define KVS_HOST_DEVICE __host__ __device__
#else
#define KVS_HOST_DEVICE
#endif
