"""Analysis in pictures: what adaptation did to the feature space, what the models predict, how training went.

Map of the package (each file one job; matplotlib and scikit-learn are imported only inside the functions that
draw or embed, so importing a module here stays cheap):

- ``alignment.py`` — per-class running moments of feature vectors and the domain gap (numpy).
- ``features.py`` — layer4 features of labelled images, reduced per class as they are read (bounded memory).
- ``embedding.py`` — PCA and t-SNE of sampled features (scikit-learn).
- ``feature_figures.py`` — the source-vs-target scatter panels and the norm histograms.
- ``feature_space.py`` — ``analyze_features``: all of the above for several checkpoints, with figures and JSON
  (``ftadapt analyze features``).
- ``grid.py`` — prediction grids: image, ground truth, the predictions of several predictors, error maps, per-frame
  mIoU (``ftadapt visualize``; the paper's Figures 4 and 5).
- ``curves.py`` — training curves from run logs (``metrics.jsonl``).
- ``plotting.py`` — what every figure shares (a Figure without pyplot, palette colours, atomic PNGs).
"""
