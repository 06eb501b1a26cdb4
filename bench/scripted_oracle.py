"""A scripted OpenAI-compatible oracle on loopback, for running the oracle's game where no real oracle fits the
machine: `python bench/scripted_oracle.py --port 8765` then point `oracle.backend: remote` at
http://127.0.0.1:8765/v1. It answers sub-topic requests with a list, exercise and harder-variant requests with the
next of a fixed set of exercises (in the code-block format), and solution requests with nothing useful (the
exercise's own solution is then the one kept)."""

from __future__ import annotations

import argparse
import http.server
import json
import threading

EXERCISES = [
    ("count_vowels", "Count the vowels in a word.",
     "def count_vowels(word):\n    return sum(c in 'aeiou' for c in word.lower())",
     ["count_vowels('apple') == 2", "count_vowels('sky') == 0", "count_vowels('AEIOU') == 5"]),
    ("second_largest", "Return the second largest distinct number of a list, or None.",
     "def second_largest(xs):\n    s = sorted(set(xs))\n    return s[-2] if len(s) > 1 else None",
     ["second_largest([1, 3, 2]) == 2", "second_largest([5, 5]) is None", "second_largest([4, 4, 1]) == 1"]),
    ("run_length", "Run-length encode a string as a list of (char, count) pairs.",
     "def run_length(s):\n    out = []\n    for c in s:\n        if out and out[-1][0] == c:\n"
     "            out[-1] = (c, out[-1][1] + 1)\n        else:\n            out.append((c, 1))\n    return out",
     ["run_length('aab') == [('a', 2), ('b', 1)]", "run_length('') == []", "run_length('abc')[2] == ('c', 1)"]),
    ("is_balanced", "Tell whether the brackets ()[]{} of a string are balanced.",
     "def is_balanced(s):\n    pairs = {')': '(', ']': '[', '}': '{'}\n    stack = []\n    for c in s:\n"
     "        if c in '([{':\n            stack.append(c)\n        elif c in pairs:\n"
     "            if not stack or stack.pop() != pairs[c]:\n                return False\n    return not stack",
     ["is_balanced('([]{})') == True", "is_balanced('(]') == False", "is_balanced('((') == False"]),
    ("merge_totals", "Merge two dicts of item totals, adding the values of shared keys.",
     "def merge_totals(a, b):\n    out = dict(a)\n    for k, v in b.items():\n        out[k] = out.get(k, 0) + v\n"
     "    return out",
     ["merge_totals({'x': 1}, {'x': 2, 'y': 3}) == {'x': 3, 'y': 3}", "merge_totals({}, {}) == {}",
      "merge_totals({'a': 5}, {}) == {'a': 5}"]),
    ("digit_root", "Repeatedly sum the digits of a non-negative integer until one digit is left.",
     "def digit_root(n):\n    while n >= 10:\n        n = sum(int(d) for d in str(n))\n    return n",
     ["digit_root(38) == 2", "digit_root(0) == 0", "digit_root(999999999) == 9"]),
    ("rotate_left", "Rotate a list left by k positions (k may exceed the length).",
     "def rotate_left(xs, k):\n    if not xs:\n        return []\n    k %= len(xs)\n    return xs[k:] + xs[:k]",
     ["rotate_left([1, 2, 3], 1) == [2, 3, 1]", "rotate_left([1, 2, 3], 4) == [2, 3, 1]", "rotate_left([], 2) == []"]),
    ("title_case", "Capitalise the first letter of every word, lower-casing the rest.",
     "def title_case(s):\n    return ' '.join(w[:1].upper() + w[1:].lower() for w in s.split(' '))",
     ["title_case('hello WORLD') == 'Hello World'", "title_case('a') == 'A'", "title_case('') == ''"]),
]


def answer(i: int) -> str:
    name, task, code, tests = EXERCISES[i % len(EXERCISES)]
    asserts = "\n".join(f"assert {t}" for t in tests)
    return f"Task: {task}\n```python\n{code}\n```\n```python\n{asserts}\n```\n"


class Handler(http.server.BaseHTTPRequestHandler):
    turn = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        n = int(body.get("n", 1))
        with self.lock:
            if "sub-topics" in prompt:
                texts = ["basics\nedge cases"]
            elif "write a new exercise" in prompt.lower():
                texts = [answer(Handler.turn)]
                Handler.turn += 1
            else:
                texts = ["I cannot help."] * n
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                   for i, t in enumerate(texts)]
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"http://127.0.0.1:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
