"""The benchmark tools (throughput, ceiling, perplexity) and the environment they run in.

Importing the package sets TensorFlow's environment as the driver does, before
any of our modules imports TensorFlow (a package runs its __init__ first), and
keeps the environment as given for the peers.
"""

import os

# The environment as given, for the peers: they run as their authors ship them.
PEER_ENV = dict(os.environ)
# Keep TensorFlow's C++ start-up chatter out of the output, as the driver does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# Pool host memory in TensorFlow's BFC allocator, as the driver does (see there why).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
