"""`python -m logllama_tui` (and `accelerate launch -m logllama_tui train ...`)."""

from logllama_tui.cli import main

if __name__ == "__main__":
    main()
