"""What runs on workers: datasets, models, losses, the training loop, phases, and the registries
of defenses (`trainables.defenses`) and attacks (`trainables.attacks`) the phases run.

It imports only the base layer (`undistill`): never `results`, `orchestrator` or
`search_spaces`. Import the submodules you need; this package imports nothing heavy at load
time so that the CLI starts instantly, and an MNIST-1D worker never loads torchvision (the
image models register on first use, see `models`).
"""
