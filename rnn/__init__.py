"""Recurrent building blocks: cells, dynamic_rnn, our fused LSTM and the table of LSTM kernels
(no Keras).

Only the submodules are exported: re-exporting the function `dynamic_rnn` here
would shadow the module `rnn.dynamic_rnn` (`from rnn import dynamic_rnn`
must keep giving the module).
"""

from . import cells, dynamic_rnn, fused_lstm, kernels

__all__ = ["cells", "dynamic_rnn", "fused_lstm", "kernels"]
