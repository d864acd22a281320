#include "runtime/engine/loaded_model.h"

#include <filesystem>
#include <fstream>

#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model/gguf_file.h"

namespace kvs {

absl::StatusOr<LoadedModel> OpenModel(const std::string& path, WeightCheck check, WeightQuantization quantize) {
  LoadedModel m;
  KVS_ASSIGN_OR_RETURN(m.source, OpenWeightSource(path));
  if (quantize == WeightQuantization::kFp8) m.source = QuantizeToFp8(std::move(m.source));
  std::string template_text;
  if (GgufFile* g = m.source->gguf()) {
    uint64_t weight_bytes = 0;
    for (const GgufTensorInfo& t : g->tensors()) weight_bytes += t.num_bytes;
    if (check == WeightCheck::kOn || (check == WeightCheck::kAuto && weight_bytes <= kAutoWeightCheckBytes)) {
      KVS_RETURN_IF_ERROR(CheckGgufWeightsFinite(*g));
    }
    KVS_ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::FromGguf(*g));
    m.tokenizer.emplace(std::move(t));
    if (g->Has("tokenizer.chat_template")) {
    KVS_ASSIGN_OR_RETURN(template_text, g->GetString("tokenizer.chat_template"));
  }
  } else {
    namespace fs = std::filesystem;
    const fs::path dir(path);
    if (fs::exists(dir / "tokenizer.json")) {
      KVS_ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::FromJsonFile((dir / "tokenizer.json").string()));
      m.tokenizer.emplace(std::move(t));
    }
    if (std::ifstream in(dir / "tokenizer_config.json"); in) {
      const auto j = nlohmann::json::parse(in, nullptr, false);
      if (j.is_discarded()) return absl::InvalidArgumentError((dir / "tokenizer_config.json").string() + ": not valid JSON");
      if (j.contains("chat_template") && j["chat_template"].is_string()) template_text = j["chat_template"].get<std::string>();
    }
  }
  if (template_text.empty() && m.source->config().architecture == "gemma3") {
    // GGUF exports of Gemma 3 often drop tokenizer.chat_template; every Gemma 3 checkpoint (base
    // and instruction-tuned) ships the same turn format, so it is used — as llama.cpp's
    // converter would have stored it.
    m.chat_template.emplace(ChatTemplate::Gemma());
  } else if (template_text.empty()) {
    m.chat_template_error = "the model has no chat template";
  } else {
    auto t = ChatTemplate::FromTemplateText(template_text);
    if (t.ok()) m.chat_template.emplace(*t);
    else m.chat_template_error = std::string(t.status().message());
  }
  return m;
}

}  // namespace kvs
