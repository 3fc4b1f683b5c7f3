// The kernel-time profiler behind bench-train --profile: categories, a CPU run, and the CLI block
// (with the provenance every bench result carries).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "test_util.h"
#include "util/kernel_profile.h"

TEST(KernelProfile, CategoriesFromKernelNames) {
  using elastic::util::kernel_category;
  EXPECT_EQ(kernel_category("void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>"), "attention_flash_fwd");
  EXPECT_EQ(kernel_category("void flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>"), "attention_flash_bwd");
  EXPECT_EQ(kernel_category("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3"), "attention_cudnn_fwd");
  EXPECT_EQ(kernel_category("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_7"), "attention_cudnn_bwd");
  EXPECT_EQ(kernel_category("nvjet_tst_256x128_64x4_1x2_h_bz_coopB_NNT"), "matmul");
  EXPECT_EQ(kernel_category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64"), "matmul");
  EXPECT_EQ(kernel_category("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>"),
            "elementwise");
  EXPECT_EQ(kernel_category("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>"), "reduction");
  EXPECT_EQ(kernel_category("void at::native::index_elementwise_kernel<128, 4>"), "index");
  EXPECT_EQ(kernel_category("void (anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16>"), "norm");
  EXPECT_EQ(kernel_category("ncclDevKernel_AllReduce_Sum_f32_RING_LL"), "collective");
  EXPECT_EQ(kernel_category("void elastic::kernels::rope_kernel<__nv_bfloat16>"), "fused");
  EXPECT_EQ(kernel_category("some_unknown_kernel"), "other");
}

TEST(KernelProfile, RunsTheWorkOnceAndTimesIt) {
  int runs = 0;
  auto p = elastic::util::profile_kernels([&] {
    ++runs;
    auto a = torch::randn({256, 256});
    (void)torch::mm(a, a).sum().item<float>();
  });
  EXPECT_EQ(runs, 1);
  EXPECT_GT(p.wall_ms, 0);
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(p.gpu_ms, 0);
    EXPECT_TRUE(p.kernels.empty());
  }
}

TEST(KernelProfile, BenchTrainRecordsAProfileBlockAndItsProvenance) {
  elastic::testing::TempDir d;
  const std::string e = ELASTIC_BINARY;
  ASSERT_EQ(std::system((e + " make-tiny-model --arch qwen3 --out " + d.str("model") + " --vocab 256 --layers 2 > /dev/null 2>&1").c_str()), 0);
  ASSERT_EQ(std::system((e + " bench-train --model " + d.str("model") + " --device cpu --tokens 512 --mix 1,1 --steps 1 "
                             "--sink 4 --window 64 --profile --no-breakdown --out " + d.str("r.json") + " > /dev/null 2>&1")
                            .c_str()),
            0);
  std::ifstream in(d.str("r.json"));
  auto j = nlohmann::json::parse(in);
  const auto& p = j["runs"][0]["profile"];
  EXPECT_GT(p["wall_ms"].get<double>(), 0);
  EXPECT_TRUE(p.contains("category_ms") && p.contains("top_kernels") && p.contains("gpu_idle_fraction"));
  if (!torch::cuda::is_available()) EXPECT_EQ(p["gpu_ms"].get<double>(), 0);

  // How the result was made: this command line, the device, and the commit of the tree it ran in.
  const std::string cmd = j["command"].get<std::string>();
  EXPECT_EQ(cmd.rfind("elastic bench-train --model " + d.str("model") + " --device cpu --tokens 512", 0), 0u) << cmd;
  EXPECT_EQ(j["machine"], "cpu");
  EXPECT_EQ(j["torch"].get<std::string>().rfind("2.", 0), 0u) << j["torch"];
  EXPECT_EQ(j["date"].get<std::string>().size(), 20u) << j["date"];  // 2026-12-05T08:00:00Z
  std::string head;
  if (FILE* g = popen("git rev-parse HEAD 2>/dev/null", "r")) {
    char buf[64] = {};
    if (fgets(buf, sizeof buf, g)) head = buf;
    pclose(g);
  }
  while (!head.empty() && head.back() == '\n') head.pop_back();
  if (head.empty()) {
    EXPECT_TRUE(j["commit"].is_null());
  } else {
    EXPECT_EQ(j["commit"], head);
    EXPECT_TRUE(j["dirty"].is_boolean());
  }
}
