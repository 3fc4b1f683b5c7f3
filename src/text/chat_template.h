// Chat formatting for one (optional system,) user, assistant exchange, reproducing
// transformers' `apply_chat_template(messages, tokenize=True)` for two hard-coded template
// families (no Jinja engine):
//   qwen3  - the Qwen3 template (<|im_start|>...); a past-final assistant turn gets
//            "<think>\n{reasoning}\n</think>\n\n" before the content, as the template does
//            (enable_thinking only matters with add_generation_prompt, which is off here).
//   llama3 - the Llama 3 template (<|start_header_id|>...<|eot_id|>, contents trimmed, BOS
//            first). The template in the shipped tokenizer_config.json appends the assistant
//            header unconditionally, so it ends with "<|start_header_id|>assistant<|end_header_id|>\n\n";
//            a template that guards it with add_generation_prompt does not.
// Llama 3.1+ templates (date / "Cutting Knowledge" system header) are rejected.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace elastic::text {

enum class ChatFamily { qwen3, llama3 };

const char* chat_family_name(ChatFamily f);
// "qwen3" / "llama3"; throws elastic::Error listing the supported names otherwise.
ChatFamily parse_chat_family(std::string_view name);
// Detects the family from tokenizer_config.json's chat_template text; nullopt when unknown.
std::optional<ChatFamily> detect_chat_family(const Tokenizer& tok);

struct ChatEncoding {
  std::vector<TokenId> ids;  // == apply_chat_template(..., tokenize=True)
  // Tokens [answer_begin, answer_end) are the assistant answer as rendered (for qwen3 the
  // content after the think block; for llama3 the trimmed answer) followed by the
  // end-of-turn token (<|im_end|> / <|eot_id|>): the tokens to put a loss on.
  // answer_begin is the first token holding any answer byte (or the end-of-turn token when
  // the answer renders empty).
  size_t answer_begin = 0;
  size_t answer_end = 0;
  std::string text;  // the rendered template text
};

class ChatFormatter {
 public:
  // Family detected from the tokenizer's chat template; throws when unknown.
  explicit ChatFormatter(const Tokenizer& tok);
  ChatFormatter(const Tokenizer& tok, ChatFamily family);

  ChatFamily family() const { return family_; }
  TokenId end_of_turn_id() const { return eot_id_; }

  // The rendered template text. `system` empty = no system message.
  std::string render(std::string_view user, std::string_view answer, std::string_view system = {}) const;
  ChatEncoding encode(std::string_view user, std::string_view answer, std::string_view system = {}) const;

 private:
  struct Parts {
    std::string before;  // everything before the rendered answer
    std::string answer;  // the answer as rendered
    std::string eot;     // end-of-turn marker
    std::string after;   // the rest
  };
  Parts render_parts(std::string_view user, std::string_view answer, std::string_view system) const;

  const Tokenizer* tok_;
  ChatFamily family_;
  TokenId eot_id_ = -1;
  bool llama_trailing_header_ = true;
  std::string bos_;
};

}  // namespace elastic::text
