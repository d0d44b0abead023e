"""The blocks the scripts share read word for word the same in every file that has them, so that
`diff stream_q.py stream_sarsa.py` shows only what differs between the algorithms. Behaviour of a
shared block is then tested on one script (the others run the same text)."""

import difflib
import inspect

import pytest

import stream_ac_continuous
import stream_ac_discrete
import stream_q
import stream_q_atari
import stream_q_minatar
import stream_sarsa

ALL = [
    stream_q,
    stream_sarsa,
    stream_ac_discrete,
    stream_ac_continuous,
    stream_q_minatar,
    stream_q_atari,
]
FLAT = [
    stream_q,
    stream_sarsa,
    stream_ac_discrete,
    stream_ac_continuous,
]  # flat observations, time feature

# name -> the modules in which it must read the same
SHARED = {
    **{
        name: ALL
        for name in ("leaky_relu", "sparse_init", "RunningStats", "ObGDState", "obgd", "one_agent")
    },
    "observe": FLAT,
    "flat": FLAT,
    "act": [stream_q, stream_q_minatar],
    "StepOutput": [stream_q, stream_sarsa, stream_q_minatar, stream_q_atari],
    "make_env": [stream_q, stream_sarsa, stream_ac_discrete],
    "QNetwork": [stream_q, stream_sarsa],
    "Args": [stream_q, stream_sarsa],
}

# lines of each script's `__main__` block that differ from stream_q's (networks, optimisers, action
# decoding, the spaces checked, the diagnostics' tags, Atari's lives): the run's skeleton (flags,
# envs, seeding, logging, saving) is the same text
MAIN_DIFFERS_FROM_STREAM_Q = {
    stream_sarsa: 0,
    stream_ac_discrete: 20,
    stream_ac_continuous: 40,
    stream_q_minatar: 11,
    stream_q_atari: 23,
}


@pytest.mark.parametrize("name", SHARED)
def test_shared_block_is_the_same_text_in_every_script(name):
    modules = SHARED[name]
    first = inspect.getsource(getattr(modules[0], name))
    for module in modules[1:]:
        other = inspect.getsource(getattr(module, name))
        assert other == first, "\n".join(
            difflib.unified_diff(
                first.splitlines(),
                other.splitlines(),
                modules[0].__name__,
                module.__name__,
                lineterm="",
            )
        )


def main_block(module):
    return inspect.getsource(module).split('if __name__ == "__main__":')[1].splitlines()


@pytest.mark.parametrize("module", MAIN_DIFFERS_FROM_STREAM_Q, ids=lambda module: module.__name__)
def test_main_block_differs_from_stream_q_only_where_the_algorithm_does(module):
    diff = [
        line
        for line in difflib.unified_diff(main_block(stream_q), main_block(module), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert len(diff) <= MAIN_DIFFERS_FROM_STREAM_Q[module], "\n".join(diff)


# the lesson's budget (non-blank lines) and width (columns) of each script: 300, 320 for the
# actor-critic and Atari scripts, plus what --resume costs each (before: 298 299 295 317 320 316)
BUDGET = {
    stream_q: 300 + 25,
    stream_sarsa: 300 + 25,
    stream_q_minatar: 300 + 24,
    stream_ac_discrete: 320 + 26,
    stream_ac_continuous: 320 + 26,
    stream_q_atari: 320 + 24,
}


@pytest.mark.parametrize("module", BUDGET, ids=lambda module: module.__name__)
def test_each_script_is_within_its_line_budget_at_100_columns(module):
    lines = inspect.getsource(module).splitlines()
    assert sum(1 for line in lines if line.strip()) <= BUDGET[module]
    assert max(len(line) for line in lines) <= 100
