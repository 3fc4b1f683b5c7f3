#include "cli/args.h"

#include <sstream>

#include "util/error.h"

namespace elastic::cli {

Args::Args(const std::string& command, int argc, char** argv, const std::set<std::string>& options,
           const std::set<std::string>& flags)
    : command_(command) {
  auto valid = [&]() {
    std::ostringstream os;
    for (const auto& o : options) os << " --" << o;
    for (const auto& f : flags) os << " --" << f;
    return os.str();
  };
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string key = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      inline_value = true;
    }
    if (flags.count(key)) {
      ELASTIC_CHECK(!inline_value, command_ << ": --" << key << " takes no value");
      flags_.insert(key);
    } else if (options.count(key)) {
      if (!inline_value) {
        ELASTIC_CHECK(i + 1 < argc, command_ << ": --" << key << " needs a value");
        value = argv[++i];
      }
      values_[key] = value;
      repeated_[key].push_back(value);
    } else {
      ELASTIC_FAIL(command_ << ": unknown option --" << key << " (valid:" << valid() << ")");
    }
  }
}

std::string Args::get(const std::string& key, const std::string& def) const {
  auto it = values_.find(key);
  return it == values_.end() ? def : it->second;
}

std::string Args::require(const std::string& key) const {
  auto it = values_.find(key);
  ELASTIC_CHECK(it != values_.end(), command_ << ": missing required option --" << key);
  return it->second;
}

int64_t Args::get_int(const std::string& key, int64_t def) const {
  auto it = values_.find(key);
  if (it == values_.end()) return def;
  try {
    size_t pos = 0;
    int64_t v = std::stoll(it->second, &pos);
    ELASTIC_CHECK(pos == it->second.size(), "");
    return v;
  } catch (...) {
    ELASTIC_FAIL(command_ << ": --" << key << " expects an integer, got '" << it->second << "'");
  }
}

double Args::get_double(const std::string& key, double def) const {
  auto it = values_.find(key);
  if (it == values_.end()) return def;
  try {
    size_t pos = 0;
    double v = std::stod(it->second, &pos);
    ELASTIC_CHECK(pos == it->second.size(), "");
    return v;
  } catch (...) {
    ELASTIC_FAIL(command_ << ": --" << key << " expects a number, got '" << it->second << "'");
  }
}

std::vector<int64_t> Args::get_int_list(const std::string& key, const std::string& def) const {
  std::vector<int64_t> out;
  std::stringstream ss(get(key, def));
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t pos = 0;
      out.push_back(std::stoll(item, &pos));
      ELASTIC_CHECK(pos == item.size(), "");
    } catch (...) {
      ELASTIC_FAIL(command_ << ": --" << key << " expects comma-separated integers, got '" << get(key, def) << "'");
    }
  }
  ELASTIC_CHECK(!out.empty(), command_ << ": --" << key << " is empty");
  return out;
}

const std::vector<std::string>& Args::all(const std::string& key) const {
  static const std::vector<std::string> none;
  auto it = repeated_.find(key);
  return it == repeated_.end() ? none : it->second;
}

}  // namespace elastic::cli
