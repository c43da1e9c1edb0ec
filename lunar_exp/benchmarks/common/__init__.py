"""Pieces several benchmark families share: made-up names, abstention questions, chunks."""
