"""What chain, chain_app, datagen and bench share, each stated once.

- `ragged_common.checks`: the one way to check an argument or option and word its error
  (`OptionError`, `check_int`, `check_number`, `check_choice`, ...).
- `ragged_common.cli`: the commands' shared click pieces: one-line errors, output directory
  options, and `checked`/`bad_parameter`, the bridge from an `OptionError` to exit 2.
- `ragged_common.atomic`: files and directories written whole or not at all.
- `ragged_common.reading`: files read only when they are regular files.
- `ragged_common.bounds`: numeric bounds such as `INT32_MAX`.

It imports neither TensorFlow nor Keras, so each package may import it at start-up.
"""
