// UTF-8 and byte-level helpers shared by the tokenizer and chat formatting.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace elastic::text::unicode {

// Offset of the first byte of the first invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF
// and truncated sequences are invalid), or npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);

// Rust String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// NFC normal form (utf8proc). `s` must be valid UTF-8. Returns `s` unchanged when it has no
// code point >= U+0300 (such text is always in NFC).
std::string nfc(std::string_view s);
bool nfc_trivially_stable(std::string_view s);

// Decode one code point at s[i] (valid UTF-8 assumed); advances i.
char32_t next_cp(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);

// GPT-2 bytes_to_unicode: byte -> code point, and back (-1 where the code point is not a
// byte-level symbol).
const std::array<char32_t, 256>& byte_to_cp();
int cp_to_byte(char32_t cp);
// Byte-level string (UTF-8 of the mapped code points) -> raw bytes. False when some code point
// is not a byte-level symbol (then `out` is unspecified).
bool byte_level_decode(std::string_view token, std::string& out);
std::string byte_level_encode(std::string_view bytes);

// Python str.isspace() for a code point (what Jinja's `trim` and str.strip() use).
bool py_isspace(char32_t cp);
// Python str.strip() / lstrip() / rstrip() with no argument (Unicode whitespace).
std::string_view py_strip(std::string_view s);
// Python str.strip(chars) for an ASCII set of characters.
std::string_view py_lstrip_chars(std::string_view s, std::string_view chars);
std::string_view py_rstrip_chars(std::string_view s, std::string_view chars);

}  // namespace elastic::text::unicode
