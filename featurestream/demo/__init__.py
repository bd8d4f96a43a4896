"""The end-to-end demo: each step a function, the story in story.py."""
