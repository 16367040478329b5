"""cpy2py 0.17's module path of :mod:`cpy2py.kernel_state`: importing it gives that
very module, so both names see the same ids and group state."""

import sys

from .. import kernel_state

sys.modules[__name__] = kernel_state
