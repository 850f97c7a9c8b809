"""The isolated build container: `runner.run(spec)` runs one command in fresh namespaces on an overlay root.

Modules: spec (ContainerSpec, Mount), runner (run, ExitStatus, SandboxError), init (the re-executed
container init), rootfs and stubs (mounts, and mount points kept out of the layer), users (USER),
network, capabilities, syscalls (ctypes). Nothing is imported here, so `python -m
builder.sandbox.init` starts fast.
"""
