"""What the NeuS fields of several stages share (reconstruct's field, generate's 3D feedback, the mesh
stage that reads a saved field): the kinds of field and what each implies (``kinds``), the hash-grid
encodings (``encodings``, nerfstudio's ``field_components/encodings.py``) and the configuration keys that
size a field (``keys``). The field network itself is reconstruct's (``reconstruct/fields.py``). Adding a
field kind is its encoding's module and one entry of ``kinds.FIELD_KINDS``.
"""
