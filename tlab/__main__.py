"""`python -m tlab` so that `accelerate launch -m tlab ...` and `torchrun -m tlab ...` work."""

from tlab.cli import main

if __name__ == "__main__":
    main()
