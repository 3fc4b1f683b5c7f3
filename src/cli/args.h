// Minimal command-line parsing for subcommands: --key value, --key=value, --flag, positionals.
// Unknown options are an error naming the option and the subcommand's valid ones.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

namespace elastic::cli {

class Args {
 public:
  // `options` take a value, `flags` do not.
  Args(const std::string& command, int argc, char** argv, const std::set<std::string>& options,
       const std::set<std::string>& flags = {});
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  bool flag(const std::string& key) const { return flags_.count(key) != 0; }
  std::string get(const std::string& key, const std::string& def) const;
  std::string require(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_double(const std::string& key, double def) const;
  // Comma-separated integers, e.g. --tokens 8192,32768.
  std::vector<int64_t> get_int_list(const std::string& key, const std::string& def) const;
  const std::vector<std::string>& positional() const { return positional_; }
  const std::vector<std::string>& all(const std::string& key) const;  // repeated options (--set)

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> repeated_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

}  // namespace elastic::cli
