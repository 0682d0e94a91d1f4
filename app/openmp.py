"""Importing this sets OpenMP's wait policy to "active" (unless the user set one): it must run
before llama_cpp is first imported, so `app/__init__.py` imports it first.

Why: llama.cpp's CPU kernels, as llama-cpp-python builds them, sync their threads with an
OpenMP barrier after every operation of a decode (hundreds a token). Each thread that calls
llama_decode gets OpenMP threads of its own: here the scheduler's worker, and whichever thread
serves a label. Once they outnumber the cores, libgomp's default policy stops spinning at those
barriers and sleeps in the kernel at each one instead. Measured on 2 cores: after the first label
read from another thread, a one-reply step went from 23 ms to 35-38 ms, and "active" brought it
back to 21-23 ms. llama.cpp's own tools decode from one thread and never meet this. Idle threads
still sleep: a process at rest used 0.0 s of CPU over 2 s either way.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "active")
