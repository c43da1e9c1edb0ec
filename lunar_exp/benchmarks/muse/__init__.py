"""MUSE-News / MUSE-Books: corpora, evaluation sets, knowmem, verbmem and privleak."""
