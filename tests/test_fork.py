"""Processes: a child made by fork after any xentc call computes the right result and never hangs
(spec, "Since v1"); spawn and forkserver children are unaffected.

Each case runs as its own Python program in a subprocess with a timeout: a hang (libgomp waiting
for pool threads that the fork did not copy, as before src_c/xc_fork.c) fails the test instead of
blocking the suite, and no fork happens inside pytest's own process. Every program first makes a
threaded xentc call in the parent, so that the parent's thread pool exists when it forks, then
checks the child's results against the parent's, bitwise (the kernels are deterministic across
thread counts) and against a float64 NumPy loss.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import xentc

# A call takes milliseconds; minutes only on a machine shared with other work.
TIMEOUT_S = float(os.environ.get("XENTC_FORK_TEST_TIMEOUT", "120"))

needs_threads = pytest.mark.skipif(
    not xentc._kernels.openmp_enabled(), reason="a build without OpenMP has no thread pool to lose"
)
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="this platform has no fork")

# Shared by every program: the inputs, the parent's threaded calls, and a float64 check.
PRELUDE = """
import os, sys
import numpy as np
import xentc

rng = np.random.default_rng(0)
x = rng.standard_normal((512, 3000)).astype(np.float32)
t = rng.integers(0, 3000, 512)


def loss_and_grad(n_threads):
    loss = xentc.cross_entropy(x, t, n_threads=n_threads)
    _, grad = xentc.cross_entropy_with_grad(x, t, n_threads=n_threads)
    return loss, grad


z = x.astype(np.float64)
peak = z.max(axis=1)
WANT = float(np.mean(peak + np.log(np.exp(z - peak[:, None]).sum(axis=1)) - z[np.arange(512), t]))
PARENT_LOSS, PARENT_GRAD = loss_and_grad(2)  # the parent's pool exists from here on
assert abs(PARENT_LOSS - WANT) <= 1e-5 * abs(WANT), (PARENT_LOSS, WANT)


def child_work(n_threads):
    loss, grad = loss_and_grad(n_threads)
    return loss == PARENT_LOSS and np.array_equal(grad, PARENT_GRAD)
"""


@pytest.fixture
def run_program(tmp_path):
    """Run PRELUDE + body as a script file (spawn and forkserver children import it as their
    main module) in a fresh interpreter; it must print OK and exit 0 in time."""
    return lambda body: run_script(tmp_path / "program.py", body)


def run_script(path, body):
    path.write_text(PRELUDE + textwrap.dedent(body))
    # A session of its own: on a timeout the whole process group goes, the hung forked children
    # included (killing the program alone would leave them waiting forever).
    with subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=path.parent,
        start_new_session=True,
    ) as program:
        try:
            stdout, stderr = program.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(program.pid, signal.SIGKILL)
            stdout, stderr = program.communicate()
            pytest.fail(f"hung for {TIMEOUT_S} s; output so far: {stdout!r} {stderr!r}")
    done = subprocess.CompletedProcess(program.args, program.returncode, stdout, stderr)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), (
        f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )


@needs_fork
@pytest.mark.parametrize("n_threads", [1, 2, 4])
def test_os_fork_child_computes_with_any_thread_count(n_threads, run_program):
    run_program(f"""
        pid = os.fork()
        if pid == 0:
            ok = child_work({n_threads}) and child_work({n_threads})
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        # The parent keeps its threads after the fork, and its results.
        assert child_work(2)
        print("OK")
    """)


@needs_fork
@needs_threads
def test_fork_handler_released_the_pool(run_program):
    # The handler ran before the fork (not merely: the child happened not to hang).
    run_program("""
        before = xentc._kernels.fork_pools_released()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if xentc._kernels.fork_pools_released() == before + 1 else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print("OK")
    """)


@needs_fork
def test_grandchild_of_a_fork_computes(run_program):
    run_program("""
        pid = os.fork()
        if pid == 0:
            assert child_work(2)
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(0 if child_work(2) else 3)
            _, status = os.waitpid(grandchild, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print("OK")
    """)


@needs_fork
def test_fork_from_another_python_thread(run_program):
    # The forking thread is not the one whose pool the parent used first, and the main thread's
    # pool stays in the parent.
    run_program("""
        import threading
        codes = []

        def fork_here():
            loss_and_grad(2)
            pid = os.fork()
            if pid == 0:
                os._exit(0 if child_work(2) else 3)
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

        worker = threading.Thread(target=fork_here)
        worker.start()
        worker.join(100)
        assert codes == [0], codes
        assert child_work(2)
        print("OK")
    """)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_process(method, run_program):
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"start method {method!r} is not available on {sys.platform}")
    run_program(f"""
        import multiprocessing as mp

        def target(queue):
            queue.put(child_work(2))

        if __name__ == "__main__":
            ctx = mp.get_context("{method}")
            queue = ctx.Queue()
            p = ctx.Process(target=target, args=(queue,))
            p.start()
            result = queue.get(timeout=100)
            p.join(10)
            assert result is True and p.exitcode == 0, (result, p.exitcode)
            print("OK")
    """)


@needs_fork
def test_multiprocessing_fork_pool(run_program):
    run_program("""
        import multiprocessing as mp

        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                results = pool.map(child_work, [1, 2, 3, 4], chunksize=1)
            assert results == [True] * 4, results
            print("OK")
    """)


@needs_fork
def test_process_pool_executor_with_fork(run_program):
    run_program("""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if __name__ == "__main__":
            with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as executor:
                results = list(executor.map(child_work, [2, 2, 1, 4]))
            assert results == [True] * 4, results
            print("OK")
    """)


@needs_fork
def test_torch_dataloader_workers(run_program):
    pytest.importorskip("torch", reason="torch is not installed (CI installs torch==2.13.0)")
    run_program("""
        import torch
        from torch.utils.data import DataLoader, Dataset

        class Losses(Dataset):
            # Each item is a loss that a DataLoader worker (a forked process) computes.
            def __len__(self):
                return 8

            def __getitem__(self, i):
                return torch.tensor(float(child_work(2)))

        loader = DataLoader(Losses(), batch_size=2, num_workers=2,
                            multiprocessing_context="fork", timeout=100)
        items = torch.cat(list(loader))
        assert items.tolist() == [1.0] * 8, items
        print("OK")
    """)


@needs_fork
def test_dask_multiprocessing_scheduler(run_program):
    pytest.importorskip("dask", reason="dask is not installed (make test installs the dask extra)")
    run_program("""
        import dask

        if __name__ == "__main__":
            tasks = [dask.delayed(child_work)(n) for n in (1, 2, 2, 4)]
            # dask's own default context is spawn; a forked pool is what this test is about.
            with dask.config.set({"multiprocessing.context": "fork"}):
                results = dask.compute(*tasks, scheduler="processes", num_workers=2)
            assert list(results) == [True] * 4, results
            print("OK")
    """)
