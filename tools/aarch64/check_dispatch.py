"""Under qemu: the sets this CPU model supports and the one chosen at import are as expected.

check_dispatch.py SUPPORTED ACTIVE   (SUPPORTED: comma-separated, narrowest first)
"""

import platform
import sys

import xentc
from xentc import _kernels

supported, active = sys.argv[1].split(","), sys.argv[2]
assert platform.machine() == "aarch64", platform.machine()
assert _kernels.isa_compiled() == ["baseline", "neon", "sve"], _kernels.isa_compiled()
assert _kernels.isa_supported() == supported, (_kernels.isa_supported(), supported)
assert _kernels.isa_active() == active, (_kernels.isa_active(), active)
print(f"xentc {xentc.__version__}: supported {supported}, active {active}: ok")
