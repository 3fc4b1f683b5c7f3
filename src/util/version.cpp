#include "util/version.h"
namespace elastic {
const char* version() { return "0.1.0"; }
}  // namespace elastic
