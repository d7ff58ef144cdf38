"""Peak extra memory of one call, for benchmarks and memory-bound tests (CPU: RSS high-water mark).

On Linux: make glibc return freed memory to the kernel (``mallopt(M_MMAP_THRESHOLD, 64 KiB)``,
``M_TRIM_THRESHOLD`` 0, ``malloc_trim(0)``) so blocks cached from earlier calls do not hide the cost, read
VmRSS, reset the kernel's VmHWM by writing 5 to ``/proc/self/clear_refs``, run the call once and report
VmHWM - VmRSS: exact at page granularity, no short peak missed. Elsewhere a thread samples the RSS with
psutil every 1 ms.
"""

import ctypes
import gc
import re
import threading
import time

# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _release_freed_memory() -> None:
    """Make glibc hand freed blocks back to the kernel now and on every later free (see the docstring)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, 64 << 10)
    libc.mallopt(M_TRIM_THRESHOLD, 0)
    libc.malloc_trim(0)


def _reset_rss_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_extra_cpu(fn) -> tuple[int, str]:
    """Peak RSS growth of this process during one call of ``fn`` (inputs and warm-up already done)."""
    gc.collect()
    _release_freed_memory()
    if _reset_rss_hwm():
        base = _proc_status_kib("VmRSS")
        _reset_rss_hwm()  # again, right before the call
        out = fn()
        peak = _proc_status_kib("VmHWM") - base
        del out
        return peak * 1024, "rss high-water mark (clear_refs)"
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(1e-3)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = fn()
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    del out
    return peak[0] - base, "rss sampled every 1 ms (psutil)"
