"""Pure renderers: data -> HTML / text, no widgets. All escaping lives in :mod:`kanibook.render.safe`."""
