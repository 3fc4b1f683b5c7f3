// The Attention Router of one layer (ELASTIC.md §4): pools the layer's pre-RoPE key
// states over each sample's prompt, and maps each KV head's pooled vector to two
// logits (index 0 = streaming, index 1 = full attention). Submodule names follow the
// reference's Hugging Face code so exported tensors load there unchanged.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace elastic::router {

enum class Pooling { boundary, prompt_mean, first_token };
Pooling parse_pooling(const std::string& name, const std::string& key);
const char* pooling_name(Pooling p);

struct RouterOptions {
  int64_t head_dim = 128;
  int64_t hidden_mult = 4;
  Pooling pooling = Pooling::boundary;
  int64_t pool_tokens = 100;  // P of boundary pooling
};

// Prompt range of each sample of a pack, [begin, end) in token positions inside the sample.
struct PromptRange {
  int64_t begin = 0, end = 0;
};

// Which key rows each sample's pooled vector averages, with their weights, on the device. It
// depends only on the pack, the prompt ranges and the pooling options, so one plan serves every
// layer and the checkpoint recompute (three host-to-device copies per step, not per layer).
struct PoolPlan {
  int64_t samples = 0;
  torch::Tensor rows, segment, weight;  // [R] int64, [R] int64, [R] fp32
};
PoolPlan make_pool_plan(const RouterOptions& opt, const std::vector<int64_t>& cu,
                        const std::vector<PromptRange>& prompts, torch::Device device);

class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(const RouterOptions& opt);
  // keys [T, Hkv, d] (pre-RoPE, post k_norm); cu: pack boundaries [B+1]; returns logits [B, Hkv, 2] fp32.
  torch::Tensor forward(const torch::Tensor& keys, const std::vector<int64_t>& cu,
                        const std::vector<PromptRange>& prompts);
  torch::Tensor forward(const torch::Tensor& keys, const PoolPlan& plan);
  torch::Tensor pool(const torch::Tensor& keys, const std::vector<int64_t>& cu,
                     const std::vector<PromptRange>& prompts) const;
  torch::Tensor pool(const torch::Tensor& keys, const PoolPlan& plan) const;
  torch::Tensor logits(const torch::Tensor& pooled);  // [B,Hkv,d] -> [B,Hkv,2]
  void reset_parameters();
  const RouterOptions& options() const { return opt_; }

  torch::nn::Sequential cls_feat_extractor{nullptr};        // task MLP: Linear, SiLU, Linear
  torch::nn::Sequential cls_router_head_agnostic{nullptr};  // Linear, SiLU, Linear, SiLU, Linear(d, 2)

 private:
  RouterOptions opt_;
};
TORCH_MODULE(Router);

}  // namespace elastic::router
