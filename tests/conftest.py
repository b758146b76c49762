import os

# Triton runs on CPU only under its interpreter, which must be chosen before any @triton.jit runs.
os.environ.setdefault("TRITON_INTERPRET", "1")
