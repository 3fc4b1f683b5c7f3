// Precompiled header for every target that includes torch (never include spdlog here).
#pragma once
#include <torch/torch.h>
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>
#include <filesystem>
#include <string>
#include <vector>
#include <map>
#include <optional>
#include <memory>
