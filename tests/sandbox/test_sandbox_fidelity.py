"""Correct programs pass as under plain Python, and values keep their meaning when they cross (issue 9, section 2
and the value forgeries of section 1). Every case runs twice, in the real sandbox and as one plain `python`
process of program + tests (the way HumanEval runs them): the verdicts must agree, and each case states the
verdict it must have."""

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from codealign.sandbox import Sandbox, Verdict

P, F, R = Verdict.PASSED, Verdict.FAILED, Verdict.RUNTIME_ERROR


def plain_verdict(solution: str, tests: str, cwd) -> Verdict:
    """One plain `python` process running the program, then the tests, in one namespace (from a file, so that
    inspect.getsource works as it does for a real program)."""
    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, "program.py")
        with open(path, "w") as fh:
            fh.write(solution + "\n" + tests)
        proc = subprocess.run([sys.executable, path], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60)
    if proc.returncode == 0:
        return P
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    return F if last.startswith("AssertionError") else R


def d(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


CASES = {
    "generator": (d("""
        def evens(n):
            for i in range(n):
                if i % 2 == 0:
                    yield i
        def naturals():
            i = 0
            while True:
                yield i
                i += 1
        """), d("""
        import itertools
        assert list(evens(7)) == [0, 2, 4, 6]
        g = evens(5)
        assert next(g) == 0 and next(g) == 2
        assert list(itertools.islice(naturals(), 4)) == [0, 1, 2, 3]
        assert sum(x for x in evens(10)) == 20
        """), P),
    "map_and_range": (d("""
        def squares(xs):
            return map(lambda x: x * x, xs)
        def upto(n):
            return range(1, n + 1)
        def keys(d):
            return d.keys()
        """), d("""
        assert list(squares([1, 2, 3])) == [1, 4, 9]
        assert upto(3) == range(1, 4) and len(upto(10)) == 10 and 5 in upto(5)
        assert keys({'a': 1}) == {'a'}
        """), P),
    "closure": (d("""
        def adder(n):
            def add(x):
                return x + n
            return add
        def apply(f, x):
            return f(x)
        """), d("""
        add3 = adder(3)
        assert add3(4) == 7
        assert list(map(adder(1), [1, 2])) == [2, 3]
        assert apply(add3, 1) == 4
        assert apply(lambda v: v * 10, 2) == 20
        assert sorted([3, 1, 2], key=adder(-1)) == [1, 2, 3]
        """), P),
    "namedtuple": (d("""
        from collections import namedtuple
        from typing import NamedTuple
        Point = namedtuple('Point', 'x y')
        class Pair(NamedTuple):
            a: int
            b: int = 0
        def origin():
            return Point(0, 0)
        def pair(a):
            return Pair(a)
        def norm1(p):
            return abs(p.x) + abs(p.y)
        """), d("""
        p = origin()
        assert p == (0, 0) and p.x == 0 and p == Point(0, 0)
        assert p._replace(x=2) == Point(2, 0)
        assert pair(1) == Pair(1, 0) and pair(1).b == 0
        assert norm1(Point(-1, 2)) == 3
        """), P),
    "fraction_decimal_dates": (d("""
        from fractions import Fraction
        from decimal import Decimal
        import datetime
        def half():
            return Fraction(1, 2)
        def price():
            return Decimal('1.10')
        def day():
            return datetime.date(2024, 2, 29)
        def when():
            return datetime.datetime(2024, 1, 1, 12, 30, tzinfo=datetime.timezone.utc)
        def span(d1, d2):
            return d2 - d1
        """), d("""
        from fractions import Fraction
        from decimal import Decimal
        import datetime
        assert half() == Fraction(1, 2) and isinstance(half(), Fraction)
        assert str(price()) == '1.10' and price() == Decimal('1.1')
        assert day().weekday() == 3
        assert when().hour == 12 and when().utcoffset() == datetime.timedelta(0)
        assert span(datetime.date(2024, 1, 1), datetime.date(2024, 1, 3)).days == 2
        """), P),
    "dataclass": (d("""
        from dataclasses import dataclass, field
        @dataclass(frozen=True)
        class Item:
            name: str
            qty: int = 1
        @dataclass(order=True)
        class Version:
            major: int
            minor: int
        def make(n):
            return Item(n, 2)
        def latest(vs):
            return max(vs)
        """), d("""
        assert make('a') == Item('a', 2)
        assert make('a') != Item('a')
        assert {make('a')} == {Item('a', 2)}
        assert latest([Version(1, 2), Version(1, 10)]) == Version(1, 10)
        """), P),
    "redirect_stdout": (d("""
        import sys
        def greet(name):
            print(f'Hello, {name}!')
        def warn():
            print('careful', file=sys.stderr)
        """), d("""
        import io, contextlib
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            greet('Ann')
            greet('Bo')
        assert buf.getvalue() == 'Hello, Ann!\\nHello, Bo!\\n'
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            warn()
        assert err.getvalue() == 'careful\\n'
        """), P),
    "custom_exceptions": (d("""
        import statistics
        class InvalidInput(ValueError):
            def __init__(self, value):
                super().__init__(f'bad value {value}')
                self.value = value
        def check(x):
            if x < 0:
                raise InvalidInput(x)
            return x
        def mean(xs):
            return statistics.mean(xs)
        """), d("""
        import statistics
        class raises:
            def __init__(self, expected):
                self.expected = expected
            def __enter__(self):
                return self
            def __exit__(self, et, ev, tb):
                assert et is not None and issubclass(et, self.expected), et
                self.value = ev
                return True
        with raises(InvalidInput) as r:
            check(-1)
        assert str(r.value) == 'bad value -1' and r.value.value == -1
        assert type(r.value).__name__ == 'InvalidInput' and isinstance(r.value, ValueError)
        with raises(ValueError):
            check(-2)
        with raises(statistics.StatisticsError):
            mean([])
        """), P),
    "unicode_decode_error": (d("""
        def dec(b):
            return b.decode('utf-8')
        """), d("""
        try:
            dec(b'\\xff')
        except UnicodeDecodeError as e:
            assert e.start == 0 and e.reason == 'invalid start byte' and e.object == b'\\xff'
        else:
            raise RuntimeError('no error')
        """), P),
    "expected_assertion_error": (d("""
        def positive(x):
            assert x > 0, 'must be positive'
            return x
        """), d("""
        try:
            positive(-1)
        except AssertionError as e:
            assert str(e) == 'must be positive'
        else:
            raise RuntimeError('no assertion')
        """), P),
    "keyerror_args": (d("""
        def get(d, k):
            return d[k]
        """), d("""
        try:
            get({}, 'x')
        except KeyError as e:
            assert e.args == ('x',) and str(e) == "'x'"
        """), P),
    "counter_defaultdict": (d("""
        from collections import Counter, defaultdict
        def count(s):
            return Counter(s)
        def group(words):
            d = defaultdict(list)
            for w in words:
                d[len(w)].append(w)
            return d
        def labels():
            return defaultdict(lambda: 'none', {'a': 'x'})
        """), d("""
        from collections import Counter
        c = count('aab')
        assert c['z'] == 0 and c.most_common(1) == [('a', 2)] and isinstance(c, Counter)
        g = group(['a', 'bb'])
        assert g[3] == [] and 3 in g and g == {1: ['a'], 2: ['bb'], 3: []}
        assert labels()['q'] == 'none'
        """), P),
    "ordered_dict_order_right": (d("""
        from collections import OrderedDict
        def od():
            return OrderedDict([('a', 1), ('b', 2)])
        """), "from collections import OrderedDict\nassert od() == OrderedDict([('a', 1), ('b', 2)])\n", P),
    "ordered_dict_order_wrong": (d("""
        from collections import OrderedDict
        def od():
            return OrderedDict([('b', 2), ('a', 1)])
        """), "from collections import OrderedDict\nassert od() == OrderedDict([('a', 1), ('b', 2)])\n", F),
    "surrogate_pair_is_not_the_character": ("def smile():\n    return '\\ud83d\\ude00'\n",
                                            "assert smile() == '\\U0001F600'\n", F),
    "astral_and_lone_surrogates_cross": ("def s():\n    return ['\\U0001F600', '\\ud800', 'x\\udfff']\n",
                                         "assert s() == ['\\U0001F600', '\\ud800', 'x\\udfff']\n", P),
    "shadowed_valueerror_is_not_the_builtin": (d("""
        class ValueError(Exception):
            pass
        def parse(s):
            raise ValueError('bad')
        """), d("""
        import builtins
        try:
            parse('x')
        except builtins.ValueError:
            pass
        """), R),
    "getsource_reads_the_real_source": (d("""
        def total(xs):
            s = 0
            for x in xs:
                s += x
            return s
        """), d("""
        import inspect
        src = inspect.getsource(total)
        assert 'sum(' not in src and 'for x in xs' in src, src
        assert total([1, 2]) == 3
        """), P),
    # typing, sys.setrecursionlimit: the function is still provably the one its `def` made (sandbox.declared)
    "getsource_of_a_typed_program": (d("""
        import sys
        from typing import List
        sys.setrecursionlimit(5000)
        def total(xs: List[int]) -> int:
            return total(xs[1:]) + xs[0] if xs else 0
        """), d("""
        import inspect
        assert 'total(' in inspect.getsource(total).split(':', 1)[1] and 'total' in total.__code__.co_names
        assert total([1, 2]) == 3
        """), P),
    "getsource_ban_catches_the_banned_construct": ("def total(xs):\n    return sum(xs)\n", d("""
        import inspect
        assert 'sum(' not in inspect.getsource(total)
        assert total([1, 2]) == 3
        """), F),
    "in_place_changes": (d("""
        def push(stack, item=None, *, log):
            stack.append(item)
            log.append(item)
        def extend_self(a, b):
            b.extend(a)
        def bump(grid):
            grid[0][0] += 1
        def fill(d, s):
            d['k'] = 1
            s.add(2)
        """), d("""
        s, log = [], []
        push(s, 1, log=log)
        assert s == [1] and log == [1]
        x = [1]
        extend_self(x, x)
        assert x == [1, 1]
        g = [[0], [5]]
        row = g[0]
        bump(g)
        assert row == [1] and g == [[1], [5]]
        d, st = {}, set()
        fill(d, st)
        assert d == {'k': 1} and st == {2}
        """), P),
    "eval_and_globals": ("def f(x):\n    return x + 1\n",
                         "assert eval('f')(1) == 2\nassert globals()['f'](2) == 3\nname = 'f'\n"
                         "assert eval(name + '(3)') == 4\n", P),
    "random_seed": (d("""
        import random
        def roll():
            return random.randint(1, 10**9)
        """), d("""
        import random
        random.seed(7)
        a = roll()
        random.seed(7)
        assert roll() == a
        random.seed(7)
        assert random.randint(1, 10**9) == a
        b = roll()
        random.seed(7)
        random.randint(1, 10**9)
        assert random.randint(1, 10**9) == b
        """), P),
    "decimal_context": ("from decimal import Decimal\ndef third():\n    return Decimal(1) / Decimal(3)\n",
                        "import decimal\ndecimal.getcontext().prec = 5\nassert str(third()) == '0.33333'\n", P),
    "patched_input": ("def ask():\n    return int(input('n? ')) * 2\n", d("""
        import builtins
        builtins.input = lambda prompt='': '21'
        assert ask() == 42
        """), P),
    "mock_patched_input": ("def ask():\n    return int(input('n? ')) * 2\n", d("""
        from unittest import mock
        with mock.patch('builtins.input', return_value='4'):
            assert ask() == 8
        """), P),
    "stdin_replaced": (d("""
        import sys
        def total():
            n = int(input())
            return sum(int(sys.stdin.readline()) for _ in range(n))
        """), "import sys, io\nsys.stdin = io.StringIO('2\\n3\\n4\\n')\nassert total() == 7\n", P),
    "calls_from_threads": ("def sq(x):\n    return x * x\n", d("""
        import threading
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as ex:
            assert list(ex.map(sq, range(200))) == [x * x for x in range(200)]
        out = []
        ts = [threading.Thread(target=lambda i=i: out.append(sq(i))) for i in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert sorted(out) == [i * i for i in range(8)]
        """), P),
    "introspection": (d('''
        def area(w, h=2, *, unit: str = 'm'):
            """Area of a rectangle."""
            return w * h
        '''), d("""
        import inspect
        assert area.__doc__ == 'Area of a rectangle.' and area.__name__ == 'area'
        assert area.__code__.co_argcount == 2 and area.__code__.co_varnames[:2] == ('w', 'h')
        sig = inspect.signature(area)
        assert list(sig.parameters) == ['w', 'h', 'unit'] and sig.parameters['h'].default == 2
        assert sig.parameters['unit'].annotation is str
        assert area.__defaults__ == (2,)
        assert area(3) == 6
        """), P),
    "module_values_after_calls": (d("""
        count = 0
        seen = []
        def inc():
            global count
            count += 1
            return count
        def add(x):
            seen.append(x)
        """), d("""
        assert count == 0 and seen == []
        inc(); inc()
        assert count == 2
        alias = seen
        add(1); add(2)
        assert seen == [1, 2] and alias == [1, 2]
        """), P),
    # a program that changes its own state where the tests check it stays: not a pass from a stale copy
    "changed_module_value_fails": (d("""
        CONFIG = {'a': 1}
        def f():
            CONFIG['a'] = 2
            return 1
        """), "assert CONFIG == {'a': 1}\nassert f() == 1\nassert CONFIG == {'a': 1}\n", F),
    "function_attributes": (d("""
        from functools import lru_cache
        @lru_cache(maxsize=None)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def tagged():
            return 1
        tagged.kind = 'plain'
        """), d("""
        assert fib(80) == 23416728348467685
        info = fib.cache_info()
        assert info.hits > 0 and info.misses == 81 and info.maxsize is None
        assert tagged.kind == 'plain' and not hasattr(tagged, 'missing')
        fib.cache_clear()
        assert fib.cache_info().currsize == 0
        """), P),
    "nan_identity": ("import math\ndef vals():\n    return [math.nan, 1.0]\n",
                     "import math\nassert vals() == [math.nan, 1.0]\n", P),
    "fresh_nan_is_not_equal": ("def vals():\n    return [float('nan')]\n",
                               "import math\nassert vals() == [math.nan]\n", F),
    "re_match": (d(r"""
        import re
        def find(s):
            return re.search(r'(\d+)-(?P<b>\d+)', s)
        def every(s):
            return list(re.finditer(r'\d', s))
        """), d("""
        import re
        m = find('a 12-34 b')
        assert m.group(1) == '12' and m.group('b') == '34' and m.span() == (2, 7)
        assert isinstance(m, re.Match) and m[0] == '12-34'
        assert find('none') is None
        assert [x.start() for x in every('a1b22')] == [1, 3, 4]
        """), P),
    "huge_int": ("def big():\n    return 7 ** 20000\n", "assert big() == 7 ** 20000\nassert big() % 10 == 1\n", P),
    "local_with_the_function_name": ("def f(x):\n    return x + 1\n", d("""
        def helper():
            f = 3
            return f
        assert helper() == 3
        assert f(2) == 3
        """), P),
    "more_value_kinds": (d(r"""
        import collections, re, datetime
        import numpy as np
        TWO = datetime.timezone(datetime.timedelta(hours=2))
        def many():
            return (collections.deque([1, 2], maxlen=3), re.compile(r'a+', re.I), bytearray(b'xy'), 1 - 2j,
                    frozenset({1}), {(1, 2)}, datetime.time(1, 2, tzinfo=TWO),
                    [0.5] * 100, list(range(100)), [2**64] * 70, {'k': [None, True]})
        def arr(n):
            return np.arange(n) * 0.5
        def npsum(n):
            return np.int64(n).sum()
        """), d(r"""
        import collections, re, datetime
        import numpy as np
        dq, rx, ba, c, fs, st, t, fl, it, big, dd = many()
        assert dq == collections.deque([1, 2]) and dq.maxlen == 3
        assert rx.match('AAa').group() == 'AAa' and rx.flags & re.I
        assert ba == bytearray(b'xy') and c == 1 - 2j and fs == frozenset({1}) and st == {(1, 2)}
        assert t.utcoffset() == datetime.timedelta(hours=2)
        assert fl == [0.5] * 100 and it == list(range(100)) and big == [2**64] * 70 and dd == {'k': [None, True]}
        assert np.allclose(arr(4), [0, 0.5, 1, 1.5]) and arr(3).dtype == np.float64
        assert npsum(3) == 3 and isinstance(npsum(3), np.int64)
        """), P),
    "large_return_value": ("def pairs(n):\n    return [(i, i * 2) for i in range(n)]\n",
                           "r = pairs(92000)\nassert len(r) == 92000 and r[-1] == (91999, 183998)\n", P),
    # -- issue 20, section 3 ----------------------------------------------------------------------------------
    "future_annotations_dataclass": (d("""
        from __future__ import annotations
        from dataclasses import dataclass
        @dataclass
        class P:
            x: int
            y: int = 0
        def mk(x):
            return P(x)
        """), "assert mk(1) == P(1) and mk(1).y == 0 and P(2, 3).y == 3\n", P),
    "sys_modules_name": (d("""
        import sys
        THIS = sys.modules[__name__]
        def f():
            return THIS.f is f
        """), "assert f()\n", P),
    "expected_system_exit": ("import sys\ndef stop(code):\n    sys.exit(code)\n", d("""
        import unittest
        class T(unittest.TestCase):
            def test_exit(self):
                with self.assertRaises(SystemExit) as cm:
                    stop(2)
                self.assertEqual(cm.exception.code, 2)
        unittest.main()
        """), P),
    "stdout_buffer": ("import sys\ndef out():\n    sys.stdout.buffer.write(b'hi\\n')\n    return 1\n",
                      "assert out() == 1\n", P),
    "intenum": (d("""
        from enum import IntEnum
        class Color(IntEnum):
            RED = 1
            GREEN = 2
        def pick(n):
            return Color(n)
        """), d("""
        assert pick(1) == Color.RED and pick(2) is Color.GREEN and pick(1) == 1
        assert isinstance(pick(1), Color) and repr(pick(2)) == '<Color.GREEN: 2>'
        """), P),
    "lazy_generator_with_callbacks": ("def lazy_map(f, xs):\n    for x in xs:\n        yield f(x)\n", d("""
        calls = []
        def f(x):
            calls.append(x)
            return x
        g = lazy_map(f, range(1, 9))
        assert calls == []
        for i, v in enumerate(g, 1):
            assert calls == list(range(1, i + 1)), calls
        """), P),
    "groupby_returned": ("import itertools\ndef groups(s):\n    return itertools.groupby(s)\n",
                         "assert [(k, ''.join(g)) for k, g in groups('aabcccdd')] == "
                         "[('a', 'aa'), ('b', 'b'), ('c', 'ccc'), ('d', 'dd')]\n", P),
    "warnings_reach_the_tests": ("import warnings\ndef old():\n    warnings.warn('old', DeprecationWarning)\n"
                                 "    return 1\n", d("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            assert old() == 1 and old() == 1
        assert len(w) == 2 and issubclass(w[0].category, DeprecationWarning) and str(w[0].message) == 'old'
        """), P),
    "log_records_reach_the_tests": (d("""
        import logging
        log = logging.getLogger('app')
        def work():
            log.info('working %d', 3)
            return 1
        """), d("""
        import unittest
        class T(unittest.TestCase):
            def test_logs(self):
                with self.assertLogs('app', level='INFO') as cm:
                    self.assertEqual(work(), 1)
                self.assertEqual(cm.output, ['INFO:app:working 3'])
        unittest.main()
        """), P),
    "argv": ("import sys\ndef args():\n    return sys.argv[1:]\n", "assert args() == []\n", P),
    "isfunction": ("def f():\n    return 1\n", "import inspect\nassert inspect.isfunction(f) and f() == 1\n", P),
    "oserror_filename": ("def read(p):\n    raise FileNotFoundError(2, 'No such file or directory', p)\n", d("""
        try:
            read('/nowhere/x.txt')
        except FileNotFoundError as e:
            assert e.filename == '/nowhere/x.txt' and e.errno == 2, e
        else:
            raise AssertionError('no error')
        """), P),
    "deep_nesting": ("def nest(n):\n    v = []\n    for _ in range(n):\n        v = [v]\n    return v\n", d("""
        x, depth = nest(600), 0
        while x:
            x, depth = x[0], depth + 1
        assert depth == 600
        """), P),
    "namedtuple_defaults": (d("""
        from typing import NamedTuple
        import collections
        class P(NamedTuple):
            x: int
            y: int = 5
        Q = collections.namedtuple('Q', 'a b', defaults=(7,))
        def mk():
            return P(1), Q(2)
        """), "assert mk() == (P(1), Q(2)) and P(1).y == 5 and Q(0).b == 7 and mk()[1].b == 7\n", P),
    "dataclass_compare_false_unsafe_hash": (d("""
        from dataclasses import dataclass, field
        @dataclass(unsafe_hash=True)
        class K:
            a: int
            note: str = field(default='', compare=False)
        def mk(a, n):
            return K(a, n)
        """), "assert mk(1, 'x') == K(1, 'y') and hash(mk(1, 'x')) == hash(K(1))\n"
              "assert len({mk(1, 'a'), K(1)}) == 1 and K(1).note == ''\n", P),
    "stringio_returned": ("import io\ndef buf():\n    return io.StringIO('a\\nb\\n')\n",
                          "b = buf()\nassert b.readline() == 'a\\n' and b.read() == 'b\\n'\n", P),
    "coroutine": ("import asyncio\nasync def co(x):\n    await asyncio.sleep(0)\n    return x * 2\n",
                  "import asyncio\nassert asyncio.run(co(2)) == 4\n", P),
}


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=10, parallelism=2) as box:
        yield box


@pytest.mark.parametrize("name", list(CASES))
def test_verdict_is_plain_pythons(sb, name, tmp_path):
    solution, tests, expected = CASES[name]
    assert plain_verdict(solution, tests, tmp_path) is expected, "the case itself is wrong under plain python"
    res = sb.run(solution, tests)
    assert res.verdict is expected, res.detail
    assert res.mode == "split", res.mode


def test_fixture_file_written_by_the_tests_runs_beside_the_solution(sb, tmp_path):
    """The judge's file system is read-only: tests that write a file for the solution run in its process, and
    the result says so."""
    solution = "def words(path):\n    with open(path) as fh:\n        return len(fh.read().split())\n"
    tests = "with open('data.txt', 'w') as fh:\n    fh.write('a b c')\nassert words('data.txt') == 3\n"
    assert plain_verdict(solution, tests, tmp_path) is P
    res = sb.run(solution, tests)
    assert res.verdict is P and res.mode == "in_process", res


def test_dataclass_with_methods_compares_in_process(sb, tmp_path):
    solution = d("""
        from dataclasses import dataclass
        @dataclass
        class V:
            x: int
            def norm(self):
                return abs(self.x)
        def mk():
            return V(-2)
        """)
    tests = "assert mk() == V(-2)\nassert mk().norm() == 2\nassert mk() != V(3)\n"
    assert plain_verdict(solution, tests, tmp_path) is P
    res = sb.run(solution, tests)
    assert res.verdict is P and res.mode == "in_process", res


def test_plain_reference_runner_sees_what_it_should(tmp_path):
    # the comparison above is only as good as this runner
    assert plain_verdict("x = 1\n", "assert x == 1\n", tmp_path) is P
    assert plain_verdict("x = 1\n", "assert x == 2\n", tmp_path) is F
    assert plain_verdict("x = 1\n", "x.foo\n", tmp_path) is R
    assert os.listdir(tmp_path) == []


def test_an_iterator_of_the_programs_class_is_not_a_bare_generator(sb, tmp_path):
    """Its own methods stay in the solution's process: tests that use them run beside it, marked."""
    solution = d("""
        class Count:
            def __init__(self, n):
                self.i, self.n = 0, n
            def __iter__(self):
                return self
            def __next__(self):
                if self.i >= self.n:
                    raise StopIteration
                self.i += 1
                return self.i
            def remaining(self):
                return self.n - self.i
        def count(n):
            return Count(n)
        """)
    tests = "c = count(3)\nassert next(c) == 1 and c.remaining() == 2\nassert list(c) == [2, 3]\n"
    assert plain_verdict(solution, tests, tmp_path) is P
    res = sb.run(solution, tests)
    assert res.verdict is P and res.mode == "in_process", res
    with Sandbox(timeout_s=10, parallelism=1, in_process="refuse") as strict:
        res = strict.run(solution, tests)
    assert res.verdict is Verdict.REFUSED and "remaining" in res.detail, res


def test_too_many_calls_for_the_time_limit_is_a_timeout_that_says_why():
    """Each call crosses between two processes (tens of microseconds) where plain Python makes it in one: a test
    making hundreds of thousands of calls may not fit the time limit, and the verdict says that is why."""
    with Sandbox(timeout_s=2, parallelism=1) as box:
        res = box.run("def f(x):\n    return x + 1\n", "for i in range(200000):\n    assert f(i) == i + 1\n")
    assert res.verdict is Verdict.TIMEOUT and "calls into the solution" in res.detail, res
