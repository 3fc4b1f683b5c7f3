#pragma once
namespace elastic {
// Project version, e.g. "0.1.0".
const char* version();
}  // namespace elastic
