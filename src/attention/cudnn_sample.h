// Full causal attention of one sample through cuDNN's fused attention (PyTorch's operator), at a
// padded length.
//
// cuDNN is the fastest causal kernel LibTorch ships for Hopper on dense [1, H, n, d] sequences (its
// ragged varlen mode measured 2x slower than flash), so it runs once per sample, on strided views
// of the pack or on copies of the sample's selected heads. PyTorch builds a cuDNN plan for every new
// shape: 40-550 ms forward and 110-1,700 ms backward on the H200, against 1-23 ms to run one
// (bench/results/cudnn_new_length_h200.json). Packs of real data bring new sample lengths every
// step, and those builds cost 23% of a Qwen3-8B step at 64K. So each sample runs at its length
// rounded up to one of 32 lengths per octave (cudnn_sample_length): at most 1/32 more rows, about
// 1/64 on average, and a bounded set of plans that repeat from step to step.
//
// The padding rows are zero. Causality keeps them out of every real row's forward. In the backward
// their dO is zero, so their dS = P (dP - D) is zero and they give nothing to dq, dk or dv.
#pragma once
#include <torch/torch.h>

#include "attention/attention.h"

namespace elastic::attention {

// The rows a sample of n tokens runs at: n rounded up to a multiple of max(128, 2^floor(log2 n) / 32).
int64_t cudnn_sample_length(int64_t n);

// PyTorch 2.11 caches cuDNN attention plans per thread and direction, without bound, keyed by the
// tensors' sizes, strides and dtype (aten/src/ATen/native/cudnn/MHA.cpp); each new key is a plan
// build. The no-grad forward runs on the caller's thread and the recompute on autograd's device
// thread, so a forward shape seen by both is built twice. note_cudnn_sample_shape records the key of a call on
// the calling thread (q, k as cuDNN gets them) and says whether it is new; cudnn_sample_shapes
// counts the keys so far, which bench-train reports per step.
bool note_cudnn_sample_shape(bool backward, const torch::Tensor& q, const torch::Tensor& k);
int64_t cudnn_sample_shapes();

// Rows [s0, s0 + n) of t [T, H, d] at the KV heads idx (an int64 host list, with their H / Hkv query
// heads each; undefined: every head) as cuDNN's input [cudnn_sample_length(n), m * H / Hkv, d]: a
// view where that is the same tensor, else a copy with zero rows after n (attention/head_rows.h:
// t needs stride(2) == 1 and stride(1) == d unless every head is taken).
torch::Tensor cudnn_sample_rows(const torch::Tensor& t, int64_t s0, int64_t n, const torch::Tensor& idx, int64_t Hkv);

// One sample through cuDNN: q [rows, Hq, d], k/v [rows, Hkv, d] from cudnn_sample_rows (rows >= n)
// -> out [n, Hq, d], lse [Hq, n] (views of cuDNN's outputs).
AttnForward cudnn_sample_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t n,
                                 double scale);

// Its backward: dout/q/k/v/out as cudnn_sample_rows gives them, lse [Hq, n] -> dq [n, Hq, d], dk/dv [n, Hkv, d].
AttnGrads cudnn_sample_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& out, const torch::Tensor& lse, int64_t n,
                                double scale);

}  // namespace elastic::attention
