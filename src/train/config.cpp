#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace elastic::train {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// One configuration key: how to read it from a scalar, write it back, and check it.
struct Field {
  std::string key;
  std::function<void(TrainConfig&, const YAML::Node&, const std::string&)> set;
  std::function<YAML::Node(const TrainConfig&)> get;
  std::function<void(const TrainConfig&, const std::string&)> check;
};

template <class T>
T as(const YAML::Node& n, const std::string& key, const char* what) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    std::ostringstream os;
    os << n;
    ELASTIC_FAIL(key << ": expected " << what << ", got '" << os.str() << "'");
  }
}

template <class T>
Field field(const std::string& key, T TrainConfig::*member, const char* what,
            std::function<void(const T&, const std::string&)> check = nullptr) {
  Field f;
  f.key = key;
  f.set = [member, what](TrainConfig& c, const YAML::Node& n, const std::string& src) {
    c.*member = as<T>(n, src, what);
  };
  f.get = [member](const TrainConfig& c) { return YAML::Node(c.*member); };
  f.check = [member, check](const TrainConfig& c, const std::string& src) {
    if (check) check(c.*member, src);
  };
  return f;
}

std::function<void(const int64_t&, const std::string&)> at_least(int64_t lo) {
  return [lo](const int64_t& v, const std::string& k) { ELASTIC_CHECK(v >= lo, k << ": must be >= " << lo << ", got " << v); };
}
std::function<void(const double&, const std::string&)> in_range(double lo, double hi) {
  return [lo, hi](const double& v, const std::string& k) {
    ELASTIC_CHECK(v >= lo && v <= hi, k << ": must be in [" << lo << ", " << hi << "], got " << v);
  };
}
std::function<void(const std::string&, const std::string&)> one_of(std::vector<std::string> options) {
  return [options](const std::string& v, const std::string& k) {
    if (std::find(options.begin(), options.end(), v) != options.end()) return;
    std::ostringstream os;
    for (const auto& o : options) os << (&o == &options[0] ? "" : ", ") << o;
    ELASTIC_FAIL(k << ": must be one of " << os.str() << ", got '" << v << "'");
  };
}

const std::vector<Field>& fields() {
  using C = TrainConfig;
  static const std::vector<Field> f = {
      field("model.path", &C::model_path, "a directory path"),
      field("model.dtype", &C::model_dtype, "a dtype name", one_of({"auto", "float32", "bfloat16", "float16", "float64"})),
      field<std::string>("model.device", &C::model_device, "a device name",
                         [](const std::string& v, const std::string& k) {
                           ELASTIC_CHECK(v == "auto" || v == "cpu" || v == "cuda" || v.rfind("cuda:", 0) == 0,
                                         k << ": must be auto, cpu, cuda or cuda:N, got '" << v << "'");
                         }),
      field("router.hidden_mult", &C::router_hidden_mult, "an integer",
            std::function<void(const int64_t&, const std::string&)>([](const int64_t& v, const std::string& k) {
              ELASTIC_CHECK(v >= 2 && v <= 8, k << ": must be in [2, 8], got " << v);
            })),
      field("router.pooling", &C::router_pooling, "a pooling mode", one_of({"boundary", "prompt_mean", "first_token"})),
      field("router.pool_tokens", &C::router_pool_tokens, "an integer", at_least(1)),
      field("ssa.sink", &C::ssa_sink, "an integer", at_least(0)),
      field("ssa.window", &C::ssa_window, "an integer", at_least(1)),
      field("tau.schedule", &C::tau_schedule, "a schedule name", one_of({"cosine", "exp"})),
      field("tau.max", &C::tau_max, "a number", in_range(1e-3, 100)),
      field("tau.min", &C::tau_min, "a number", in_range(1e-3, 100)),
      field("tau.anneal_fraction", &C::tau_anneal_fraction, "a number", in_range(0, 1)),
      field("tau.exp_rate", &C::tau_exp_rate, "a number", in_range(0, 100)),
      field("objective.form", &C::objective_form, "a form name", one_of({"abs_sq", "signed"})),
      field("objective.default_target", &C::objective_default_target, "a number", in_range(0, 1)),
      field("objective.lambda_init_max", &C::objective_lambda_init_max, "a number", in_range(0, 100)),
      field("optim.lr", &C::optim_lr, "a number", in_range(0, 10)),
      field("optim.lambda_lr", &C::optim_lambda_lr, "a number", in_range(0, 10)),
      field("optim.beta1", &C::optim_beta1, "a number", in_range(0, 0.999999)),
      field("optim.beta2", &C::optim_beta2, "a number", in_range(0, 0.999999)),
      field("optim.eps", &C::optim_eps, "a number", in_range(0, 1)),
      field("optim.weight_decay", &C::optim_weight_decay, "a number", in_range(0, 10)),
      field("optim.warmup_fraction", &C::optim_warmup_fraction, "a number", in_range(0, 1)),
      field("optim.min_lr_ratio", &C::optim_min_lr_ratio, "a number", in_range(0, 1)),
      field("optim.grad_clip", &C::optim_grad_clip, "a number", in_range(0, 1e9)),
      field("train.steps", &C::train_steps, "an integer", at_least(1)),
      field("train.micro_batches", &C::train_micro_batches, "an integer", at_least(1)),
      field("train.seed", &C::train_seed, "a non-negative integer"),
      field("train.routing", &C::train_routing, "a routing mode", one_of({"router", "off", "random"})),
      field("train.random_streaming", &C::train_random_streaming, "a fraction", in_range(0, 1)),
      field("train.backbone_lr", &C::train_backbone_lr, "a number", in_range(0, 10)),
      field("train.logits_chunk", &C::train_logits_chunk, "an integer", at_least(1)),
      field("train.checkpoint", &C::train_checkpoint, "true or false"),
      field("train.offload_checkpoints", &C::train_offload_checkpoints, "true or false"),
      field<std::string>("train.keep_layers", &C::train_keep_layers, "auto or an integer",
                         [](const std::string& v, const std::string& k) {
                           const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
                           ELASTIC_CHECK(v == "auto" || (digits && v.size() < 6),
                                         k << ": must be auto or a number of layers >= 0, got '" << v << "'");
                         }),
      field("train.max_nonfinite_steps", &C::train_max_nonfinite_steps, "an integer", at_least(1)),
      field("train.resume", &C::train_resume, "'auto' or a checkpoint directory"),
      field("checkpoint.every", &C::checkpoint_every, "an integer", at_least(0)),
      field("checkpoint.keep", &C::checkpoint_keep, "an integer", at_least(1)),
      field("dist.timeout_s", &C::dist_timeout_s, "a number", in_range(1, 1e6)),
      field("data.path", &C::data_path, "a file path"),
      field("data.shuffle", &C::data_shuffle, "true or false"),
      field("output.dir", &C::output_dir, "a directory path"),
      field("log.every", &C::log_every, "an integer", at_least(1)),
      field("log.level", &C::log_level, "a log level", one_of({"debug", "info", "warn", "error"})),
  };
  return f;
}

const Field* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& src) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& k : config_keys()) {
    size_t d = edit_distance(key, k);
    if (d < best_d) best_d = d, best = k;
  }
  ELASTIC_FAIL(src << ": unknown config key '" << key << "'" << (best_d <= 6 ? " (did you mean '" + best + "'?)" : "")
                   << "; valid keys are listed by `elastic train --help`");
}

void set_trainable(TrainConfig& c, const YAML::Node& n, const std::string& src) {
  c.train_trainable.clear();
  if (n.IsScalar()) {
    auto s = n.as<std::string>();
    if (!s.empty()) c.train_trainable.push_back(s);  // --set train.trainable=REGEX
    return;
  }
  ELASTIC_CHECK(n.IsSequence(), src << ": expected a list of parameter-name regexes");
  for (const auto& e : n) c.train_trainable.push_back(as<std::string>(e, src, "a regex string"));
}

void set_tasks(TrainConfig& c, const YAML::Node& n, const std::string& src) {
  ELASTIC_CHECK(n.IsMap(), src << ": expected a map of task name -> {id, target}");
  c.tasks.clear();
  for (const auto& kv : n) {
    TaskSpec t;
    t.name = kv.first.as<std::string>();
    const std::string k = src + "." + t.name;
    ELASTIC_CHECK(kv.second.IsMap(), k << ": expected {id: N, target: X}");
    for (const auto& e : kv.second) {
      const auto key = e.first.as<std::string>();
      if (key == "id") {
        t.id = as<int64_t>(e.second, k + ".id", "an integer");
      } else if (key == "target") {
        t.target = as<double>(e.second, k + ".target", "a number");
      } else {
        ELASTIC_FAIL(k << ": unknown key '" << key << "' (expected id, target)");
      }
    }
    ELASTIC_CHECK(kv.second["id"], k << ": missing 'id'");
    ELASTIC_CHECK(t.target >= 0 && t.target <= 1, k << ".target: must be in [0, 1], got " << t.target);
    ELASTIC_CHECK(t.id >= 0 && t.id < 1024, k << ".id: must be in [0, 1024), got " << t.id);
    for (const auto& other : c.tasks) {
      ELASTIC_CHECK(other.id != t.id, k << ".id: " << t.id << " is already used by task '" << other.name << "'");
    }
    c.tasks.push_back(t);
  }
}

void apply(TrainConfig& c, const std::string& prefix, const YAML::Node& node, const std::string& src) {
  if (prefix == "tasks") return set_tasks(c, node, src + ": tasks");
  if (prefix == "train.trainable") return set_trainable(c, node, src + ": train.trainable");
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const auto k = kv.first.as<std::string>();
      apply(c, prefix.empty() ? k : prefix + "." + k, kv.second, src);
    }
    return;
  }
  if (node.IsNull() && prefix.empty()) return;  // empty file
  const Field* f = find_field(prefix);
  if (!f) unknown_key(prefix, src);
  ELASTIC_CHECK(node.IsScalar(), src << ": " << prefix << ": expected a single value");
  f->set(c, node, src + ": " + prefix);
}

void validate(const TrainConfig& c, const std::string& src) {
  for (const auto& f : fields()) f.check(c, src + ": " + f.key);
  ELASTIC_CHECK(!c.model_path.empty(), src << ": model.path is required (a Hugging Face model directory)");
  ELASTIC_CHECK(!c.data_path.empty(), src << ": data.path is required (a packed dataset, see docs/dataset-format.md)");
  ELASTIC_CHECK(c.tau_min <= c.tau_max, src << ": tau.min (" << c.tau_min << ") must not exceed tau.max (" << c.tau_max << ")");
}

}  // namespace

router::RouterOptions router_options(const TrainConfig& cfg, int64_t head_dim) {
  router::RouterOptions ro;
  ro.head_dim = head_dim;
  ro.hidden_mult = cfg.router_hidden_mult;
  ro.pooling = router::parse_pooling(cfg.router_pooling, "router.pooling");
  ro.pool_tokens = cfg.router_pool_tokens;
  return ro;
}

std::vector<TaskSpec> default_tasks() {
  return {{"single_qa", 0, 0.7}, {"multihop_qa", 1, 0.7}, {"summarization", 2, 1.0}, {"code", 3, 1.0}, {"icl", 4, 1.0}};
}

const TaskSpec* TrainConfig::task_by_id(int64_t id) const {
  for (const auto& t : tasks)
    if (t.id == id) return &t;
  return nullptr;
}

double TrainConfig::target_for(int64_t id) const {
  const auto* t = task_by_id(id);
  return t ? t->target : objective_default_target;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> k;
  for (const auto& f : fields()) k.push_back(f.key);
  k.push_back("train.trainable");
  k.push_back("tasks");
  return k;
}

TrainConfig parse_config(const std::string& text, const std::string& src, const std::vector<std::string>& overrides) {
  TrainConfig c;
  c.tasks = default_tasks();
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    ELASTIC_FAIL(src << ": invalid YAML at line " << e.mark.line + 1 << ": " << e.msg);
  }
  ELASTIC_CHECK(root.IsNull() || root.IsMap(), src << ": the top level must be a mapping of sections");
  apply(c, "", root, src);
  for (const auto& o : overrides) {
    auto eq = o.find('=');
    ELASTIC_CHECK(eq != std::string::npos && eq > 0, "--set " << o << ": expected key=value");
    const std::string key = o.substr(0, eq), value = o.substr(eq + 1);
    YAML::Node n;
    try {
      n = YAML::Load(value);
    } catch (const YAML::Exception& e) {
      ELASTIC_FAIL("--set " << key << ": value is not valid YAML: " << e.msg);
    }
    if (key.rfind("tasks.", 0) == 0) {
      // --set tasks.single_qa.target=0.5
      auto rest = key.substr(6);
      auto dot = rest.rfind('.');
      ELASTIC_CHECK(dot != std::string::npos, "--set " << key << ": expected tasks.NAME.id or tasks.NAME.target");
      const auto name = rest.substr(0, dot), sub = rest.substr(dot + 1);
      YAML::Node all;
      for (const auto& t : c.tasks) all[t.name] = YAML::Node(YAML::NodeType::Map), all[t.name]["id"] = t.id, all[t.name]["target"] = t.target;
      all[name][sub] = n;
      set_tasks(c, all, "--set tasks");
      continue;
    }
    if (key == "train.trainable") {
      set_trainable(c, n, "--set train.trainable");
      continue;
    }
    const Field* f = find_field(key);
    if (!f) unknown_key(key, "--set");
    f->set(c, n, "--set " + key);
  }
  validate(c, src);
  return c;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!path.empty()) {
    std::ifstream in(path);
    ELASTIC_CHECK(in.good(), path << ": config file not found");
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return parse_config(text, path.empty() ? "config" : path, overrides);
}

std::string to_yaml(const TrainConfig& c) {
  YAML::Node root;
  for (const auto& f : fields()) {
    auto dot = f.key.find('.');
    root[f.key.substr(0, dot)][f.key.substr(dot + 1)] = f.get(c);
  }
  YAML::Node tr(YAML::NodeType::Sequence);
  for (const auto& t : c.train_trainable) tr.push_back(t);
  root["train"]["trainable"] = tr;
  for (const auto& t : c.tasks) {
    root["tasks"][t.name]["id"] = t.id;
    root["tasks"][t.name]["target"] = t.target;
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace elastic::train
