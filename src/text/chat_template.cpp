#include "text/chat_template.h"

#include "text/unicode.h"
#include "util/error.h"

namespace elastic::text {

namespace {

bool has(std::string_view s, std::string_view needle) { return s.find(needle) != std::string_view::npos; }

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

size_t byte_len(const Tokenizer& tok, const std::vector<TokenId>& ids, size_t n) {
  size_t b = 0;
  for (size_t i = 0; i < n; ++i) b += tok.token_bytes(ids[i]).size();
  return b;
}

}  // namespace

const char* chat_family_name(ChatFamily f) {
  switch (f) {
    case ChatFamily::qwen3: return "qwen3";
    case ChatFamily::llama3: return "llama3";
  }
  return "?";
}

ChatFamily parse_chat_family(std::string_view name) {
  if (name == "qwen3") return ChatFamily::qwen3;
  if (name == "llama3") return ChatFamily::llama3;
  ELASTIC_FAIL("unknown chat template family '" << name << "' (supported: qwen3, llama3)");
}

std::optional<ChatFamily> detect_chat_family(const Tokenizer& tok) {
  const std::string& t = tok.chat_template();
  if (has(t, "<|im_start|>") && has(t, "reasoning_content") && has(t, "</think>")) return ChatFamily::qwen3;
  if (has(t, "<|start_header_id|>") && has(t, "<|eot_id|>") && !has(t, "Cutting Knowledge") &&
      !has(t, "Today Date") && !has(t, "tools"))
    return ChatFamily::llama3;
  return std::nullopt;
}

namespace {
ChatFamily detect_or_throw(const Tokenizer& tok) {
  auto f = detect_chat_family(tok);
  ELASTIC_CHECK(f.has_value(), "tokenizer '" << tok.path() << "': the chat_template in tokenizer_config.json is not "
                                             << "one of the supported families (qwen3: Qwen3 <|im_start|> template "
                                             << "with <think>; llama3: Llama 3 template without date/tools "
                                             << "header); pass the family explicitly if it matches one of them");
  return *f;
}
}  // namespace

ChatFormatter::ChatFormatter(const Tokenizer& tok) : ChatFormatter(tok, detect_or_throw(tok)) {}

ChatFormatter::ChatFormatter(const Tokenizer& tok, ChatFamily family) : tok_(&tok), family_(family) {
  const char* eot = family == ChatFamily::qwen3 ? "<|im_end|>" : "<|eot_id|>";
  auto id = tok.token_to_id(eot);
  ELASTIC_CHECK(id.has_value(), "tokenizer '" << tok.path() << "': chat family " << chat_family_name(family)
                                              << " needs the token " << eot << ", which it does not have");
  eot_id_ = *id;
  if (family == ChatFamily::llama3) {
    // The template prepends bos_token (from tokenizer_config.json) to the first message.
    bos_ = tok.bos_token().value_or("");
    // The shipped Llama 3 template appends the assistant header unconditionally; templates that
    // guard it with add_generation_prompt (false here) do not.
    const std::string& t = tok.chat_template();
    llama_trailing_header_ = !has(t, "add_generation_prompt");
  }
}

ChatFormatter::Parts ChatFormatter::render_parts(std::string_view user, std::string_view answer,
                                                 std::string_view system) const {
  using unicode::py_lstrip_chars;
  using unicode::py_rstrip_chars;
  Parts p;
  if (family_ == ChatFamily::qwen3) {
    if (!system.empty()) p.before += "<|im_start|>system\n" + std::string(system) + "<|im_end|>\n";
    p.before += "<|im_start|>user\n" + std::string(user) + "<|im_end|>\n";
    // ns.last_query_index: the user turn, unless its content is a tool response.
    const bool tool_response = starts_with(user, "<tool_response>") && ends_with(user, "</tool_response>");
    std::string_view content = answer;
    std::string_view reasoning;
    if (has(answer, "</think>")) {
      const size_t last = answer.rfind("</think>");
      content = py_lstrip_chars(answer.substr(last + 8), "\n");
      std::string_view head = py_rstrip_chars(answer.substr(0, answer.find("</think>")), "\n");
      const size_t open = head.rfind("<think>");
      if (open != std::string_view::npos) head = head.substr(open + 7);
      reasoning = py_lstrip_chars(head, "\n");
    }
    if (!tool_response) {
      // loop.last: the think block is always emitted for the final assistant turn.
      p.before += "<|im_start|>assistant\n<think>\n" +
                  std::string(py_rstrip_chars(py_lstrip_chars(reasoning, "\n"), "\n")) + "\n</think>\n\n";
      content = py_lstrip_chars(content, "\n");
    } else {
      p.before += "<|im_start|>assistant\n";
    }
    p.answer = std::string(content);
    p.eot = "<|im_end|>";
    p.after = "\n";
  } else {
    auto block = [](std::string_view role, std::string_view content) {
      return "<|start_header_id|>" + std::string(role) + "<|end_header_id|>\n\n" +
             std::string(unicode::py_strip(content));
    };
    p.before = bos_;
    if (!system.empty()) p.before += block("system", system) + "<|eot_id|>";
    p.before += block("user", user) + "<|eot_id|>";
    p.before += "<|start_header_id|>assistant<|end_header_id|>\n\n";
    p.answer = std::string(unicode::py_strip(answer));
    p.eot = "<|eot_id|>";
    if (llama_trailing_header_) p.after = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return p;
}

std::string ChatFormatter::render(std::string_view user, std::string_view answer, std::string_view system) const {
  Parts p = render_parts(user, answer, system);
  return p.before + p.answer + p.eot + p.after;
}

ChatEncoding ChatFormatter::encode(std::string_view user, std::string_view answer, std::string_view system) const {
  Parts p = render_parts(user, answer, system);
  ChatEncoding r;
  r.text = p.before + p.answer + p.eot + p.after;
  r.ids = tok_->encode(r.text, /*add_special_tokens=*/false);
  // Token byte lengths add up to the normalized text. `before` ends with "\n", which never
  // composes under NFC, so the normalized prefix is a prefix of the normalized whole.
  const std::vector<TokenId> head = tok_->encode(p.before, false);
  const size_t head_bytes = byte_len(*tok_, head, head.size());
  const std::vector<TokenId> through_eot = tok_->encode(p.before + p.answer + p.eot, false);
  const size_t eot_bytes = byte_len(*tok_, through_eot, through_eot.size());
  size_t cum = 0, i = 0;
  while (i < r.ids.size() && cum + tok_->token_bytes(r.ids[i]).size() <= head_bytes)
    cum += tok_->token_bytes(r.ids[i++]).size();
  r.answer_begin = i;
  while (i < r.ids.size() && cum < eot_bytes) cum += tok_->token_bytes(r.ids[i++]).size();
  r.answer_end = i;
  ELASTIC_CHECK(cum == eot_bytes && r.answer_end > r.answer_begin && r.ids[r.answer_end - 1] == eot_id_,
                "chat encoding: cannot locate the end-of-turn token after the answer (tokenizer '"
                    << tok_->path() << "', family " << chat_family_name(family_) << ")");
  return r;
}

}  // namespace elastic::text
