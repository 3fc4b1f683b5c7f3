#!/usr/bin/env python3
"""Write golden tokenizer data for tests/text/test_tokenizer.cpp and test_chat_template.cpp.

Uses the Hugging Face `tokenizers` library (encode/decode) and `transformers`
(apply_chat_template) as the reference. Usage:

    python3 tools/gen_tokenizer_golden.py --tokenizers DIR --out OUTDIR

DIR holds one sub-folder per tokenizer (qwen3/, llama3/), each with tokenizer.json and
tokenizer_config.json. Writes OUTDIR/<name>.json per tokenizer plus OUTDIR/corpus.json.
Deterministic: running it twice (or on another machine with the same library versions)
gives byte-identical files.
"""
import argparse
import json
import os
import platform
import random
import sys

NAMES = ["qwen3", "llama3"]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def long_document() -> str:
    parts = [
        "# Elastic Attention: notes\n\n",
        "The router chooses, per head and per token, between full and sparse attention. ",
        "Costs are measured in FLOPs (≈ 2·n·d per token) and in memory traffic.\r\n",
        "Résumé: naïve implementations waste 37.5% of bandwidth; ours reaches 1234567 tok/s.\n",
        "    def route(x):\n        return torch.sigmoid(self.proj(x)) > 0.5\n\n",
        "Привет мир! Καλημέρα κόσμε! 你好，世界！こんにちは世界。안녕하세요 세계! مرحبا بالعالم! नमस्ते दुनिया! สวัสดีชาวโลก!\n",
        "Emoji: 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵 — they're fine, I'M sure, THEY'LL see.\t\tTabbed\tcolumns\n",
        "Numbers: 1, 22, 333, 4444, 55555, 666666, 7777777, 3.14159265358979, 2^64 = 18446744073709551616.\n",
        "   Indented line with trailing spaces   \n\n\n",
    ]
    out = []
    i = 0
    while sum(len(p.encode("utf-8")) for p in out) < 6000:
        out.append(parts[i % len(parts)])
        if i % 4 == 3:
            out.append(f"Section {i} — value {i * 7919 % 100003}.\n")
        i += 1
    return "".join(out)


def corpus():
    c = [
        ("empty", ""),
        ("ascii", "Hello world"),
        ("ascii_sentence", "The quick brown fox jumps over the lazy dog."),
        ("leading_space", " leading space"),
        ("trailing_space", "trailing space "),
        ("double_spaces", "  double  spaces  between  "),
        ("single_space", " "),
        ("single_newline", "\n"),
        ("single_tab", "\t"),
        ("contractions", "I'm here, they're there, we've gone, you'll see, she'd know, it's, don't, can't"),
        ("contractions_upper", "I'M HERE, THEY'RE, WE'VE, YOU'LL, SHE'D, IT'S, DON'T"),
        ("contractions_mixed", "they'Re I'M it'S we'Ve you'lL 'S 'd ''s 'ſ x'ſt"),
        ("apostrophes", "rock 'n' roll, '90s, ’curly’ quotes, l'été"),
        ("latin_accents", "Café déjà vu, naïve façade, Ångström, São Paulo, Łódź, Øresund, Straße, œuvre"),
        ("cyrillic", "Привет, как дела? Съешь же ещё этих мягких французских булок, да выпей чаю."),
        ("greek", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αλφάβητο ΑΒΓΔ αβγδ."),
        ("chinese", "我爱自然语言处理。今天天气很好，我们去公园散步吧！"),
        ("japanese", "いろはにほへと ちりぬるを カタカナ 漢字混じり文です。ｶﾀｶﾅ"),
        ("korean", "다람쥐 헌 쳇바퀴에 타고파. 안녕하세요, 세계!"),
        ("arabic", "مرحبا بالعالم! اللغة العربية جميلة ١٢٣٤ ٥٦٧"),
        ("hebrew", "שלום עולם! עברית"),
        ("hindi", "नमस्ते दुनिया। हिन्दी भाषा १२३ क्षत्रिय"),
        ("thai", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ"),
        ("vietnamese", "Tiếng Việt có dấu: Nguyễn Văn Ảnh, đường phố."),
        ("emoji", "😀😃😄 👍 👍🏽 👍🏿 ❤️ ✨"),
        ("emoji_zwj", "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👩🏽‍💻 coder, 🧑‍🤝‍🧑"),
        ("emoji_flags", "🇺🇸🇯🇵🇩🇪 🏴󠁧󠁢󠁳󠁣󠁴󠁿"),
        ("code_python", "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n"),
        ("code_cpp", "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x *= 2; // double\n\treturn v.size() == 3 ? 0 : 1;\n}\n"),
        ("code_rust", "fn main() {\n    let s: &str = \"héllo\";\n    println!(\"{}\", s.len());\n}\n"),
        ("code_js", "const f = async (a, b) => { await fetch(`/api/${a}?b=${b}`); };\n"),
        ("code_html", "<div class=\"x\">&nbsp;<a href='https://example.com/?q=1&r=2'>link</a></div>"),
        ("code_json", "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}"),
        ("code_sql", "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%an%';"),
        ("code_shell", "for f in *.txt; do echo \"$f\" | tr a-z A-Z >> out.log 2>&1; done"),
        ("numbers", "0 1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890"),
        ("numbers_long", "18446744073709551616 3.14159265358979323846 -42 +7 1e-10 6.02e23 1,000,000 0x1F 0b1010 007"),
        ("numbers_unicode", "０１２３４５ ١٢٣ ۴۵۶ १२३ ½ ¾ ² ³ Ⅻ ① 𝟙𝟚𝟛"),
        ("digits_in_words", "abc123def 4x4 mp3 H2O 2nd 3rd v1.2.3 COVID-19"),
        ("whitespace_runs", "a    b        c                d"),
        ("tabs", "\t\tindented\twith\ttabs\t\t"),
        ("newlines", "line1\nline2\n\nline3\n\n\n\nline4"),
        ("crlf", "line1\r\nline2\r\n\r\nline3\r\n"),
        ("cr_only", "a\rb\r\rc"),
        ("spaces_newlines", "   \n   \n\t \n  x  \n   "),
        ("trailing_ws", "word   \t  "),
        ("only_ws", "      "),
        ("unicode_spaces", "a\u00a0b\u2009c\u3000d\u2028e\u2029f\u0085g\u180eh\u200bi\u202fj\u205fk"),
        ("control_chars", "a\x00b\x01c\x1cd\x1de\x1ff\x7fg\x0bh\x0ci"),
        ("bom", "\ufeffBOM at start"),
        ("specials_qwen", "Hello<|im_end|>world<|endoftext|> <|im_start|>user\nhi<|im_end|>\n"),
        ("specials_think", "<think>\nreasoning here\n</think>\n\nanswer <tool_call>{}</tool_call>"),
        ("specials_llama", "<|begin_of_text|>x<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi"),
        ("specials_adjacent", "<|im_end|><|im_end|><|eot_id|><|eot_id|>"),
        ("specials_partial", "<|im_end <|eot_id| <|im_start|x <<|im_start|>> <|reserved_special_token_5|>"),
        ("specials_spaces", " <|im_start|> spaced <|eot_id|> "),
        ("nfc_decomposed", "Cafe\u0301 re\u0301sume\u0301 A\u030a \u212b \u1100\u1161\u11a8 o\u0308\u0304"),
        ("nfc_combining_only", "\u0301\u0301 x\u0327\u0301"),
        ("nfc_compat", "\ufb01 \u2126 \u00c5 \u1e9b\u0323 \uff21"),
        ("mixed_scripts", "Hello世界123abcПривет😀مرحبا"),
        ("long_word", "a" * 300),
        ("repeated_pairs", "ab" * 150),
        ("punct_runs", "!!!!!!!!!! ...... ---------- ========== ?!?!?! ((((())))) ~~~~"),
        ("url_email", "Visit https://www.example.org/path/to?query=1#frag or mail john.doe+tag@example.co.uk"),
        ("math", "∀x∈ℝ: x² ≥ 0, ∑_{i=1}^{n} i = n(n+1)/2, α+β=γ, ∞"),
        ("box_drawing", "┌──┐\n│ok│\n└──┘"),
        ("rare_chars", "\U0001F9EC \U00020000 \U0002A6D6 \U0010FFFD \uFFFD"),
        ("long_document", long_document()),
    ]
    names = [n for n, _ in c]
    assert len(names) == len(set(names))
    return c


def chat_cases():
    # (name, system or None, user, answer)
    return [
        ("simple", None, "Hi there", " Hello!\n"),
        ("math", None, "What is 2+2?", "2+2 = 4."),
        ("french", None, "Translate to French: good morning", "Bonjour !"),
        ("whitespace", None, "  spaced user  ", "\n\nleading newlines answer  \n"),
        ("reasoning", None, "Explain briefly.", "<think>\nI should think.\n</think>\n\nFinal answer."),
        ("tool_response_user", None, "<tool_response>x</tool_response>", "ok"),
        ("unicode", None, "emoji 👍🏽 and Café", "日本語の回答です。 Привет!"),
        ("empty", None, "", ""),
        ("system", "You are a helpful assistant.", "Hi", "Hello, how can I help?"),
        ("special_in_answer", None, "say it", "a<|im_end|>b<|eot_id|>c"),
        ("crlf_answer", None, "q", "\r\nline\r\n"),
        ("decomposed", None, "Cafe\u0301?", "Re\u0301sume\u0301 \u212b"),
        ("multiline_code", None, "Write code", "```python\nprint('hi')\n```\n"),
    ]


SYNTH_EXTRA = [
    ("tmpl_plain", "hello world"),
    ("lstrip_tok", "left   <ls> right"),
    ("rstrip_tok", "left <rs>   right"),
    ("lstrip_rstrip_start_end", "  <ls>x<rs>  "),
    ("single_word_ok", "a word here"),
    ("single_word_inside", "swordfish words word_ sword"),
    ("single_word_edges", "word"),
    ("normalized_tok_composed", "caf\u00e9 \u00e9t\u00e9"),
    ("normalized_tok_decomposed", "cafe\u0301 e\u0301te\u0301"),
    ("special_inside", "x<s>y</s>z<pad><sp>"),
    ("overlap_longest", "<sp><spx> <s><s>"),
]


def synthetic_tokenizer(cases):
    """A small byte-level BPE with the features the real files do not exercise:
    TemplateProcessing, lstrip/rstrip/single_word and normalized added tokens, [a, b] merges."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pattern = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pre = pre_tokenizers.Sequence([split, bl])
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    # deterministic greedy merges over the corpus
    words = {}
    for _, text in cases:
        for w, _ in pre.pre_tokenize_str(text):
            words[w] = words.get(w, 0) + 1
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(300):
        counts = {}
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + n
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if counts[best] < 2:
            break
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        for w in seqs:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<s>", special=True, normalized=False),
                            AddedToken("</s>", special=True, normalized=False),
                            AddedToken("<pad>", special=True, normalized=False),
                            AddedToken("<sp>", special=True, normalized=False)])
    tok.add_tokens([AddedToken("<ls>", lstrip=True, normalized=False, special=False),
                    AddedToken("<rs>", rstrip=True, normalized=False, special=False),
                    AddedToken("word", single_word=True, normalized=False, special=False),
                    AddedToken("<spx>", normalized=False, special=False),
                    AddedToken("\u00e9t\u00e9", normalized=True, special=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return tok


def eot_token(name):
    return {"qwen3": "<|im_end|>", "llama3": "<|eot_id|>"}[name]


def chat_golden(name, path, hf_tok):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    eot_id = hf_tok.token_to_id(eot_token(name))
    out = []
    for cname, system, user, answer in chat_cases():
        msgs = []
        if system is not None:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": user})
        msgs.append({"role": "assistant", "content": answer})
        text = tok.apply_chat_template(msgs, tokenize=False, enable_thinking=False)
        ids = tok.apply_chat_template(msgs, tokenize=True, enable_thinking=False)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        ids = list(ids)
        # The answer span is the answer as the template renders it (Qwen3 moves a
        # <think>..</think> part into the think block and lstrips newlines; Llama 3 trims), up
        # to and including the end-of-turn token. The closing text after the answer comes
        # from a render with a sentinel answer; the rendered answer is checked in the text.
        sentinel = "\x00SENTINEL\x00"
        srender = tok.apply_chat_template(msgs[:-1] + [{"role": "assistant", "content": sentinel}],
                                          tokenize=False, enable_thinking=False)
        suffix = srender[srender.index(sentinel) + len(sentinel):]
        assert text.endswith(suffix), cname
        ans_end_char = len(text) - len(suffix)
        eot = eot_token(name)
        assert text[ans_end_char:].startswith(eot), (cname, text[ans_end_char:])
        if name == "qwen3":
            content = answer.split("</think>")[-1].lstrip("\n") if "</think>" in answer else answer
            content = content.lstrip("\n")
        else:
            content = answer.strip()
        cut = ans_end_char - len(content)
        assert text[cut:ans_end_char] == content, cname
        enc = hf_tok.encode(text, add_special_tokens=False)
        assert enc.ids == ids, f"{name}/{cname}: transformers ids differ from tokenizers(text)"
        begin = next(i for i, (s, e) in enumerate(enc.offsets) if e > cut)
        end = next(i for i, (s, e) in enumerate(enc.offsets) if s >= ans_end_char and enc.ids[i] == eot_id) + 1
        out.append({"name": cname, "system": system, "user": user, "answer": answer, "text": text,
                    "ids": ids, "answer_begin": begin, "answer_end": end})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", required=True, help="dir with qwen3/ and llama3/ sub-folders")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer
    try:
        import transformers
        tf_version = transformers.__version__
    except ImportError:
        tf_version = None

    os.makedirs(args.out, exist_ok=True)
    cases = corpus()
    with open(os.path.join(args.out, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": [{"name": n, "text": t} for n, t in cases]}, f, ensure_ascii=False, indent=0)
        f.write("\n")

    synth_dir = os.path.join(args.out, "synthetic")
    os.makedirs(synth_dir, exist_ok=True)
    synthetic_tokenizer(cases).save(os.path.join(synth_dir, "tokenizer.json"))

    for name in NAMES + ["synthetic"]:
        path = os.path.join(args.tokenizers, name) if name != "synthetic" else synth_dir
        tj = os.path.join(path, "tokenizer.json")
        with open(tj, "rb") as f:
            raw = f.read()
        tok = Tokenizer.from_file(tj)
        cases_here = cases + (SYNTH_EXTRA if name == "synthetic" else [])
        enc = {}
        for cname, text in cases_here:
            with_sp = tok.encode(text, add_special_tokens=True).ids
            without = tok.encode(text, add_special_tokens=False).ids
            enc[cname] = {
                "ids": with_sp,
                "ids_no_special": without,
                "decoded": tok.decode(with_sp, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(with_sp, skip_special_tokens=True),
            }
        # decode of arbitrary id sequences (invalid UTF-8 on purpose, special ids, out of range)
        rng = random.Random(20240611)
        vs = tok.get_vocab_size(with_added_tokens=True)
        dec = []
        for k in range(40):
            n = rng.randint(1, 12)
            ids = [rng.randrange(vs) for _ in range(n)]
            if k % 5 == 0:
                ids.append(vs - 1)
            if k % 7 == 0:
                ids.insert(0, vs + 10)  # out of range: HF drops it
            dec.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                        "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        # single byte tokens: all 256 byte-level symbols, one at a time and a split emoji
        emoji = tok.encode("👨‍👩‍👧‍👦", add_special_tokens=False).ids
        for cut in range(1, len(emoji)):
            dec.append({"ids": emoji[:cut], "decoded": tok.decode(emoji[:cut], skip_special_tokens=False),
                        "decoded_skip_special": tok.decode(emoji[:cut], skip_special_tokens=True)})
        probe = ["hello", "Ġhello", "<|im_end|>", "<|eot_id|>", "<|begin_of_text|>", "<think>", "ĊĊ", "not-a-token-xyz"]
        vocab_probe = {p: tok.token_to_id(p) for p in probe}
        id_probe = {str(i): tok.id_to_token(i) for i in [0, 1, 100, 198, 271, 1000, vs - 1, vs, vs + 5]}
        chat = chat_golden(name, path, tok) if tf_version and name != "synthetic" else []
        doc = {
            "generator": {"tokenizers": tokenizers.__version__, "transformers": tf_version,
                          "python": platform.python_version()},
            "tokenizer": name,
            "fingerprint_fnv1a64": f"{fnv1a64(raw):016x}",
            "vocab_size": vs,
            "vocab_size_no_added": tok.get_vocab_size(with_added_tokens=False),
            "token_to_id": vocab_probe,
            "id_to_token": id_probe,
            "extra_cases": [{"name": n, "text": t} for n, t in cases_here[len(cases):]],
            "encode": enc,
            "decode": dec,
            "chat": chat,
        }
        with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        print(f"{name}: {len(cases_here)} encode cases, {len(dec)} decode cases, {len(chat)} chat cases", file=sys.stderr)


if __name__ == "__main__":
    main()
