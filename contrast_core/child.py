"""The child process of `projection.ChildProcess`: it runs what its parent should not import.

It reads pickled `(fn, args, kwargs)` from stdin and writes `(True, result)` or `(False, reason)` to
stdout, one call at a time, until stdin closes (its parent is gone). Started with `python -m`, not
by multiprocessing: a spawned child would run the parent's `__main__`, which in Streamlit is the
page script (it would start the app's workers again).
"""

import pickle
import sys


def main() -> None:
    calls, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a print in the work must not garble the answers
    while True:
        try:
            fn, args, kwargs = pickle.load(calls)
        except EOFError:
            return
        try:
            answer = (True, fn(*args, **kwargs))
        except Exception as exc:  # the reason goes back; the child serves the next call
            answer = (False, str(exc) or type(exc).__name__)
        pickle.dump(answer, answers)
        answers.flush()


if __name__ == "__main__":
    main()
