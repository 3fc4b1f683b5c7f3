// Byte-level BPE tokenizer that reads Hugging Face tokenizer.json (+ tokenizer_config.json).
// Matches `tokenizers.Tokenizer.encode/decode` for the Qwen2/Qwen3 and Llama 3 families; see
// docs/tokenizer.md for what is supported. No torch, no Python.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace elastic::text {

using TokenId = int32_t;

class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static Tokenizer from_dir(const std::string& dir);
  // config_json may be empty: then bos/eos come only from the post-processor (none) and
  // chat_template() is empty.
  static Tokenizer from_files(const std::string& tokenizer_json, const std::string& config_json = "");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Same meaning as HF `Tokenizer.encode(text, add_special_tokens=...).ids`. `text` must be
  // valid UTF-8 (elastic::Error otherwise). Thread-safe.
  std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = true) const;
  // Encodes texts on n_threads threads (0: hardware concurrency); result order = input order.
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special_tokens = true,
                                                 int n_threads = 0) const;
  // Same as HF `Tokenizer.decode(ids, skip_special_tokens=...)`: unknown ids are dropped,
  // invalid UTF-8 becomes U+FFFD (Rust from_utf8_lossy).
  std::string decode(std::span<const TokenId> ids, bool skip_special_tokens = false) const;

  // HF get_vocab_size(with_added_tokens=true) / (false).
  size_t vocab_size() const;
  size_t model_vocab_size() const;
  std::optional<TokenId> token_to_id(std::string_view token) const;  // token as in tokenizer.json
  std::optional<std::string> id_to_token(TokenId id) const;
  // Raw bytes a token stands for (byte-level decoded; added tokens: their content). Empty for
  // unknown ids.
  std::string token_bytes(TokenId id) const;
  bool is_special(TokenId id) const;  // an added token with "special": true

  // From tokenizer_config.json (bos_token / eos_token / pad_token), if set and known.
  std::optional<TokenId> bos_id() const;
  std::optional<TokenId> eos_id() const;
  std::optional<TokenId> pad_id() const;
  const std::string& chat_template() const;  // tokenizer_config.json "chat_template" or ""
  std::optional<std::string> bos_token() const;

  // FNV-1a 64 of the tokenizer.json bytes.
  uint64_t fingerprint() const;
  const std::string& path() const;  // the tokenizer.json path

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// FNV-1a 64-bit hash.
uint64_t fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace elastic::text
