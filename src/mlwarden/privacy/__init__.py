"""Privacy machinery shared by the data-extraction threats and the DP defence: reference models, the
membership signal matrix, ROC metrics, accountants and the one-run privacy audit."""
