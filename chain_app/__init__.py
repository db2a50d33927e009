"""chain_app: the `chain` command and its run directories, built on the `chain` library.

The library (`chain`: the model, its strategies and its training step) never imports this
package; `chain.fit_run`, `chain.evaluate_run`, `chain.FitOptions` and `chain.TrainingDiverged`
reach it lazily.

- `options`: `FitOptions` and the checks of every option (no TensorFlow);
- `runs`: the run directory, its checkpoint pair, history, plot and report files (no TensorFlow);
- `data`: a run's datasets, facts from `datagen.info`, samples read once per source;
- `floors`: what a run is scored by: the masked MSE against the noise floor, or on token data
  the cross-entropy against the law's floor (no TensorFlow);
- `laws`: a dataset's law digest, and the check that a run is scored on data of its law;
- `fit`: `fit_run`, the model it builds and its callbacks;
- `report`: scores, `report.json` and `evaluate_run`;
- `generate`: `generate_run`, a run's outputs on a dataset's inputs, to JSON and a plot;
- `harmonise`: `harmonise_run`, a soprano over a chorale's lower voices, to MusicXML, MIDI and
  a piano roll;
- `cli`: `chain fit`, `chain evaluate`, `chain generate` and `chain harmonise`.
"""
