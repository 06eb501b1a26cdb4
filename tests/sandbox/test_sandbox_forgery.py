"""No wrong solution gets PASSED by any path (issue 9, section 1): choosing the in-process path, leaving the
tests behind in System V IPC for a later run, tests that only run as __main__, tests that end with unittest.main()
or sys.exit(). Each test is a real program in the real sandbox."""

from pathlib import Path

import pytest
import yaml

from codealign.config import ConfigError, config_from_dict
from codealign.sandbox import RewardTable, Sandbox, Verdict

LOCAL = Path(__file__).resolve().parents[2] / "configs" / "local.yaml"
SQUARE = "def square(x):\n    return x * x\n"
WRONG = "def square(x):\n    return x + x\n"  # right for 2, wrong for 3
TESTS = "assert square(3) == 9\nassert square(-2) == 4\n"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=3, parallelism=1) as box:
        yield box


@pytest.fixture(scope="module")
def strict():
    with Sandbox(timeout_s=3, parallelism=1, in_process="refuse") as box:
        yield box


# -- choosing the in-process path ------------------------------------------------------------------------------
REPLACE_RUNNER = (
    "import sys\n"
    "for name, mod in list(sys.modules.items()):\n"
    "    if name.startswith('codealign.sandbox') and hasattr(mod, 'run_in_process'):\n"
    "        mod.run_in_process = lambda tests, ns: {'verdict': 'passed', 'detail': ''}\n"
)
# the tested name is a def, but at run time the program changes how the sandbox classifies its names
RECLASSIFY = (
    "import sys\n"
    "for name, mod in list(sys.modules.items()):\n"
    "    if name.startswith('codealign.sandbox') and hasattr(mod, 'kind_of'):\n"
    "        mod.kind_of = lambda value: 'other'\n"
)


def test_a_def_cannot_push_its_tests_in_process_at_run_time(sb):
    res = sb.run(WRONG + RECLASSIFY + REPLACE_RUNNER, TESTS)
    assert res.verdict is Verdict.FAILED and res.mode == "split", res


def test_a_class_that_replaces_the_runner_is_marked_and_refused(sb, strict):
    solution = "class square:\n    def __new__(cls, x):\n        return x + x\n" + REPLACE_RUNNER
    allowed = sb.run(solution, TESTS)
    # where in-process runs are allowed, a forged pass cannot hide: the result says where its verdict came from
    assert allowed.verdict is not Verdict.PASSED or allowed.mode == "in_process", allowed
    refused = strict.run(solution, TESTS)
    assert refused.verdict is Verdict.REFUSED and refused.mode == "in_process", refused
    assert refused.reward == RewardTable().refused == RewardTable().failed
    # the split path is untouched by the policy
    assert strict.run(SQUARE, TESTS).verdict is Verdict.PASSED


def test_a_non_plain_argument_falls_back_marked_and_is_refused(sb, strict):
    # an object of the tests' own class, with methods: neither data nor a callable (a lambda crosses as a handle
    # the solution calls back, sandbox.rpc)
    tests = ("class Acc:\n    def __init__(self):\n        self.total = 0\n"
             "    def add(self, v):\n        self.total += v\n        return self.total\n"
             "assert apply(Acc(), 2) == 2\n")
    solution = "def apply(acc, x):\n    return acc.add(x)\n"
    res = sb.run(solution, tests)
    assert res.verdict is Verdict.PASSED and res.mode == "in_process", res
    res = strict.run(solution, tests)
    assert res.verdict is Verdict.REFUSED and res.mode == "in_process", res


def test_in_process_policy_is_validated():
    with pytest.raises(ValueError, match="in_process"):
        Sandbox(in_process="sometimes")


def test_executor_in_process_is_validated_at_config_load():
    raw = yaml.safe_load(LOCAL.read_text())
    assert config_from_dict(raw).executor.in_process == "refuse"
    raw["executor"]["in_process"] = "sometimes"
    with pytest.raises(ConfigError, match="executor.in_process"):
        config_from_dict(raw)


# -- System V IPC: nothing crosses from one run to the next ------------------------------------------------------
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n"
LEAVE_SHM = LIBC + (
    "sid = libc.shmget(0x5EED, 4096, 0o1666)\n"
    "if sid >= 0:\n"
    "    addr = libc.shmat(sid, None, 0)\n"
    "    ctypes.memmove(addr, b'9', 1)\n"
)
READ_SHM = LIBC + (
    "def square(x):\n"
    "    sid = libc.shmget(0x5EED, 4096, 0o666)\n"
    "    if sid < 0:\n"
    "        return x + x\n"
    "    return int(ctypes.string_at(libc.shmat(sid, None, 0), 1))\n"
)
LEAVE_MSG = LIBC + (
    "class Msg(ctypes.Structure):\n    _fields_ = [('mtype', ctypes.c_long), ('text', ctypes.c_char * 8)]\n"
    "q = libc.msgget(0x5EED, 0o1666)\n"
    "if q >= 0:\n"
    "    libc.msgsnd(q, ctypes.byref(Msg(1, b'9')), 8, 0)\n"
)
READ_MSG = LIBC + (
    "class Msg(ctypes.Structure):\n    _fields_ = [('mtype', ctypes.c_long), ('text', ctypes.c_char * 8)]\n"
    "def square(x):\n"
    "    q = libc.msgget(0x5EED, 0o666)\n"
    "    m = Msg()\n"
    "    if q < 0 or libc.msgrcv(q, ctypes.byref(m), 8, 0, 0o4000) < 0:\n"
    "        return x + x\n"
    "    return int(m.text)\n"
)


@pytest.mark.parametrize("leave, read", [(LEAVE_SHM, READ_SHM), (LEAVE_MSG, READ_MSG)], ids=["shm", "msg"])
def test_system_v_ipc_does_not_reach_a_later_run(sb, leave, read):
    sb.run(leave, "")  # same server (parallelism 1): before, they shared one IPC namespace
    res = sb.run(read, "assert square(3) == 9\n")
    assert res.verdict is Verdict.FAILED, res


def test_shared_memory_cannot_grow_past_the_memory_limit():
    hoard = LIBC + (
        "for i in range(3):\n"
        "    sid = libc.shmget(0, 100 * 2**20, 0o1600)\n"
        "    assert sid >= 0, ctypes.get_errno()\n"
        "    addr = libc.shmat(sid, None, 0)\n"
        "    assert addr not in (None, 2**64 - 1)\n"
        "    ctypes.memset(addr, 1, 100 * 2**20)\n"
        "    libc.shmdt(ctypes.c_void_p(addr))\n"
    )
    with Sandbox(timeout_s=5, parallelism=1, memory_mb=256) as box:
        assert box.run(hoard, "").verdict is Verdict.RUNTIME_ERROR


# -- tests as __main__, unittest.main(), sys.exit() --------------------------------------------------------------
UNITTEST = (
    "import unittest\n"
    "class TestSquare(unittest.TestCase):\n"
    "    def test_three(self):\n"
    "        self.assertEqual(square(3), 9)\n"
)


@pytest.mark.parametrize("tests", [
    "if __name__ == '__main__':\n    assert square(3) == 9\n",
    UNITTEST + "if __name__ == '__main__':\n    unittest.main()\n",
    UNITTEST + "unittest.main()\n",
    "assert square(2) == 4\nimport sys\nsys.exit(square(3) != 9)\n",
], ids=["main-guard", "unittest-guarded", "unittest-bare", "sys-exit-status"])
def test_tests_run_as_main_and_are_judged_by_their_exit_status(sb, strict, tests):
    for box in (sb, strict):
        wrong, right = box.run(WRONG, tests), box.run(SQUARE, tests)
        assert wrong.verdict is Verdict.FAILED, wrong
        assert right.verdict is Verdict.PASSED and right.mode == "split", right


def test_sys_exit_zero_at_the_end_of_the_tests_passes_and_spares_the_server(sb):
    server = sb._all[0].proc.pid if sb._all else None
    res = sb.run(SQUARE, TESTS + "import sys\nsys.exit(0)\n")
    assert res.verdict is Verdict.PASSED, res
    assert sb.run(WRONG, TESTS).verdict is Verdict.FAILED
    assert server is None or [s.proc.pid for s in sb._all] == [server]


def test_in_process_tests_run_as_main_too(sb):
    solution = "class Box:\n    def __init__(self, v):\n        self.v = v\n"
    tests = "if __name__ == '__main__':\n    assert Box(3).v == 4\n"
    res = sb.run(solution, tests)
    assert res.verdict is Verdict.FAILED and res.mode == "in_process", res


def test_the_executor_applies_its_in_process_policy():
    from codealign.actors.executor import Executor
    from codealign.config import ExecutorConfig

    job = ("class Box:\n    pass\n", "assert Box() is not None\n")
    refusing = Executor(ExecutorConfig(timeout_s=3.0), RewardTable(), parallelism=1)
    allowing = Executor(ExecutorConfig(timeout_s=3.0, in_process="allow"), RewardTable(), parallelism=1)
    try:
        assert refusing.protections()["in_process_refused"]
        [refused] = refusing.run_batch([job])
        [allowed] = allowing.run_batch([job])
    finally:
        refusing.sandbox.close()
        allowing.sandbox.close()
    assert (refused.verdict, refused.mode) == (Verdict.REFUSED, "in_process")
    assert (allowed.verdict, allowed.mode) == (Verdict.PASSED, "in_process")


# -- values and requests from the solution cannot steer the judge ------------------------------------------------
# The solution's process holds one end of the calls (sandbox.rpc.Session): model code can reach it and send the
# judge whatever it likes. Each forgery below is followed by REPLACE_RUNNER: if the run were pushed in-process, the
# replaced runner would forge the pass.
SESSION = (
    "import sys\n"
    "def _session():\n"
    "    f = sys._getframe(1)\n"
    "    while f is not None and not hasattr(f.f_locals.get('self'), 'request'):\n"
    "        f = f.f_back\n"
    "    return f.f_locals['self']\n"
)


@pytest.mark.parametrize("request_", [
    "{'op': 'get', 'n': 'EXPECTED'}",
    "{'op': 'call', 'n': 'answer', 'a': [], 'k': {}}",
], ids=["read-a-global", "call-by-name"])
def test_the_judge_serves_no_name_of_the_tests(sb, request_):
    solution = SESSION + (
        "def square(x):\n"
        f"    reply = _session().request({request_})\n"
        "    return reply['v'] if reply.get('ok') else x + x\n"
    )
    tests = "EXPECTED = 9\ndef answer():\n    return 9\nassert square(3) == EXPECTED\n"
    res = sb.run(solution + REPLACE_RUNNER, tests)
    assert res.verdict is Verdict.FAILED and res.mode == "split", res


def test_the_judge_never_adopts_the_solutions_random_state(sb):
    # the program seeds `random` and knows which numbers that seed draws; the tests draw their inputs unseeded
    solution = (
        "import random\nrandom.seed(1234)\nKNOWN = {random.randint(3, 10**9) for _ in range(3)}\nrandom.seed(1234)\n"
        "def square(x):\n    return x * x if x in KNOWN else x + x\n"
    )
    tests = "import random\nfor _ in range(3):\n    x = random.randint(3, 10**9)\n    assert square(x) == x * x\n"
    res = sb.run(solution, tests)
    assert res.verdict is Verdict.FAILED and res.mode == "split", res


def test_the_judge_never_adopts_the_solutions_decimal_context(sb):
    solution = "import decimal\ndecimal.getcontext().prec = 2\ndef third():\n    return decimal.Decimal('0.33')\n"
    tests = "from decimal import Decimal\nassert third() == Decimal(1) / Decimal(3)\n"
    res = sb.run(solution, tests)
    assert res.verdict is Verdict.FAILED and res.mode == "split", res


def test_a_value_the_judge_could_not_send_back_does_not_push_the_tests_in_process(sb):
    # a 600-deep list: the program raised its own recursion limit to encode it; passed back by the tests, the judge
    # could not encode it, and before, that sent the tests beside the solution (where the runner is replaced)
    solution = (
        "import sys\nsys.setrecursionlimit(20000)\n"
        "def encode(s):\n    v = [s]\n    for _ in range(600):\n        v = [v]\n    return v\n"
        "def decode(v):\n    return 'wrong'\n"
    )
    res = sb.run(solution + REPLACE_RUNNER, "assert decode(encode('abc')) == 'abc'\n")
    assert res.verdict is not Verdict.PASSED and res.mode == "split", res


def test_an_oserror_from_the_solution_does_not_push_the_tests_in_process(sb):
    # the judge's file system is read-only and tests that write files run beside the solution; the solution
    # raising the same error (EROFS) must not count as the tests writing
    solution = "def square(x):\n    raise OSError(30, 'Read-only file system')\n"
    res = sb.run(solution + REPLACE_RUNNER, TESTS)
    assert res.verdict is Verdict.RUNTIME_ERROR and res.mode == "split", res


def test_the_functions_code_cannot_be_run_in_the_judge(sb):
    # `__code__` answers from the source (introspection works), but the tests cannot turn it into a function of
    # their own process: no code of the program ever runs beside the expected values
    solution = "def where():\n    try:\n        return MARK\n    except NameError:\n        return None\n"
    tests = (
        "import types\nMARK = 'judge'\n"
        "assert where.__code__.co_name == 'where' and 'MARK' in where.__code__.co_names\n"
        "try:\n    local = types.FunctionType(where.__code__, globals())\nexcept TypeError:\n    local = where\n"
        "assert local() is None\n"
    )
    res = sb.run(solution, tests)
    assert res.verdict is Verdict.PASSED and res.mode == "split", res


# -- the judge acts on the program's source, not on what its process says (issue 20, section 1) -----------------
# FORGE_HELLO(extra) rewrites the solution process's first message (its names and how to show them) to carry
# `extra`: anything its process says is the program's word.
def FORGE_HELLO(extra: str) -> str:
    return (
        "import sys as _sys\n"
        "_rpc = _sys.modules['codealign.sandbox.rpc']\n"
        "_send = _rpc.Session.send\n"
        "def _forged(self, msg):\n"
        "    if isinstance(msg, dict) and 'names' in msg:\n"
        f"        msg['names'].update({extra})\n"
        "    return _send(self, msg)\n"
        "_rpc.Session.send = _forged\n"
    )


def test_the_judge_imports_no_module_the_source_does_not_import(strict):
    # importing unittest.__main__ runs unittest.main() on the judge's (empty) main module: "ran 0 tests", status 0
    solution = "globals()['square'] = lambda x: x + x\n" + FORGE_HELLO("{'square': ['m', 'unittest.__main__']}")
    res = strict.run(solution, TESTS)
    assert res.verdict is not Verdict.PASSED, res


def test_a_dataclass_copy_takes_no_member_from_the_program(strict):
    # a field default named __eq__ would become the copy's own equality (here a function of the program: True)
    solution = (
        "from dataclasses import dataclass\n"
        "@dataclass\nclass P:\n    x: int\n"
        "def mk(x):\n    return P(x + 1)\n"
        "def always(a, b):\n    return True\n"
        + FORGE_HELLO("{'P': ['DC', '__solution__:P', {'fields': ['x', '__eq__'], 'eq': True, 'order': False, "
                      "'frozen': False}, {'__eq__': ['v', always]}]}")
    )
    res = strict.run(solution, "assert mk(1) == P(1)\n")
    assert res.verdict is Verdict.FAILED, res


def test_the_programs_word_binds_no_dunder_in_the_tests_namespace(strict):
    # `__name__` fetched from the solution ('__solution__'): the tests' main block would never run
    solution = WRONG + FORGE_HELLO("{'__name__': ['v']}")
    res = strict.run(solution, "if __name__ == '__main__':\n    assert square(3) == 9\n")
    assert res.verdict is Verdict.FAILED, res


EXPECT_ERROR = "try:\n    square(-1)\nexcept Exception:\n    pass\nelse:\n    raise AssertionError('no error')\n"


@pytest.mark.parametrize("body", [
    "return object()",  # a value that cannot be sent back
    "import sys; sys.exit(3)",
    "import os; os._exit(0)",  # the solution's process ends mid-call
], ids=["unsendable", "sys-exit", "process-ends"])
def test_the_judges_signals_are_not_the_programs_exceptions(strict, body):
    # plain python: no Exception is raised (an object is returned, the process exits), so the tests do not pass
    solution = f"def square(x):\n    if x < 0:\n        {body}\n    return x * x\n"
    res = strict.run(solution, EXPECT_ERROR)
    assert res.verdict is not Verdict.PASSED, res
    res = strict.run(solution, "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n"
                               "        with self.assertRaises(Exception):\n            square(-1)\nunittest.main()\n")
    assert res.verdict is not Verdict.PASSED, res


REBOUND = "def _other(xs):\n    return sorted(xs)\nglobals()['my_sort'] = _other\n"
BUBBLE = ("def my_sort(xs):\n    xs = list(xs)\n    for i in range(len(xs)):\n"
          "        for j in range(len(xs) - 1 - i):\n            if xs[j] > xs[j + 1]:\n"
          "                xs[j], xs[j + 1] = xs[j + 1], xs[j]\n    return xs\n")


@pytest.mark.parametrize("check", [
    "import inspect\nassert 'sorted' not in inspect.getsource(my_sort)\n",
    "assert 'sorted' not in my_sort.__code__.co_names\n",
], ids=["getsource", "code"])
def test_introspection_describes_what_the_call_runs(sb, strict, check):
    tests = check + "assert my_sort([3, 1, 2]) == [1, 2, 3]\n"
    for box in (sb, strict):
        res = box.run(BUBBLE + REBOUND, tests)
        assert res.verdict is not Verdict.PASSED, res
        # a program that does not rebind its functions keeps its introspection on the split path
        res = box.run(BUBBLE, tests)
        assert res.verdict is Verdict.PASSED and res.mode == "split", res
