// Errors that reach the user. Every message names the file, tensor or config key at fault.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace elastic {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace elastic

// ELASTIC_CHECK(cond, "what" << detail): throws elastic::Error with the message.
#define ELASTIC_CHECK(cond, expr)                         \
  do {                                                    \
    if (!(cond)) {                                        \
      std::ostringstream elastic_check_os_;               \
      elastic_check_os_ << expr;                          \
      throw ::elastic::Error(elastic_check_os_.str());    \
    }                                                     \
  } while (0)

#define ELASTIC_FAIL(expr)                                \
  do {                                                    \
    std::ostringstream elastic_check_os_;                 \
    elastic_check_os_ << expr;                            \
    throw ::elastic::Error(elastic_check_os_.str());      \
  } while (0)
