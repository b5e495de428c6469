"""`rrvmm hunt`: many (chaos) recordings of one guest until a failure is caught on tape.

``condition`` says what counts as the failure, ``run`` makes one recording and judges it
(the same function on a local thread or a cluster worker), ``pools`` are the engines that
run them (a local pool, or a Dask cluster), ``driver`` keeps the pool busy, keeps the
failing traces and counts.
"""
