// The optimizer step of the router (and of unfrozen backbone tensors) as a few multi-tensor
// kernels. A router is ten small tensors per layer: LibTorch's AdamW launches nine kernels for each
// (3,240 for Qwen3-8B) and clip_grad_norm_ two more per tensor plus a host sync, so on a GPU the
// end of every step was thousands of microsecond launches with the GPU mostly idle.
#pragma once
#include <torch/torch.h>

#include <unordered_map>
#include <vector>

namespace elastic::train {

// torch::optim::AdamW with the same maths and the same saved state (checkpoints stay compatible in
// both directions), stepping each (device, dtype) group with at::_fused_adamw_.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  // The fused kernel reads each tensor's step count from device memory; kept here between steps
  // and rebuilt from the saved host count when they disagree (a fresh state or a loaded one).
  struct DeviceStep {
    torch::Tensor count;
    int64_t host = -1;
  };
  std::unordered_map<c10::TensorImpl*, DeviceStep> device_steps_;
};

// torch::nn::utils::clip_grad_norm_ (L2) in multi-tensor kernels and without reading the norm on the
// host: scales the gradients of `params` in place so their global norm is at most max_norm and
// returns the norm before clipping, as a 0-dim fp32 tensor on the gradients' device.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace elastic::train
