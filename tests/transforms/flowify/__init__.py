"""Flowified layers: the maths of ../shared/design/flowification.md section 6."""
