// Checkpointed layer inputs kept in pinned host memory (train.offload_checkpoints). The copies run on
// a side stream so they overlap the compute: an input leaves while its layer's forward runs, and
// comes back while the backward works on the layer after it. On the compute stream (before session
// 17) each copy stalled the step: about 10-20 ms a layer and direction at 64K tokens on an H100.
#pragma once
#include <torch/torch.h>

#include <optional>
#include <vector>

namespace elastic::model {

class CheckpointOffload : public torch::CustomClassHolder {
 public:
  // Starts copying a layer input (a device tensor) to the host; returns its slot. Slots are
  // numbered in forward order, and the backward takes them back in reverse.
  int64_t push(const torch::Tensor& x);
  // Slot `slot`'s input on its device, ordered before any later work on the current stream. Starts
  // bringing back slot - 1, the input the next recompute needs.
  torch::Tensor take(int64_t slot);
  // Starts bringing back the last slot's input, if nothing has taken it yet: the backward's first
  // recompute needs it, and nothing before that recompute would otherwise ask for it.
  void prefetch_last();

 private:
  struct Slot {
    torch::Tensor host;
    torch::Tensor device;             // set once its copy back has started
    std::optional<c10::Event> ready;  // recorded on the side stream after that copy
  };
  void fetch(Slot& s);
  c10::Stream side_stream(c10::Device device);

  std::vector<Slot> slots_;
  std::optional<c10::Stream> side_;
};

}  // namespace elastic::model
