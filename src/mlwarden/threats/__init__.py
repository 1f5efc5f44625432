"""Built-in threats, one attack per file, grouped by family. Importing this package registers them."""
from .corruption import backdoor, backdoor_transfer, feature_collision, gradient_matching, gradient_poisoning, neural_cleanse, label_flipping, spam_dictionary, spam_focused, unsafe_file  # noqa: F401
from .federated import (  # noqa: F401
    alie, analytic, client_label_flipping, dlg, fang, idlg, inverting_gradients, ipm, model_replacement,
    robbing_the_fed, sign_flipping)
from .membership import label_only, lm_membership, membership_inference  # noqa: F401
from .memorization import secret_sharer  # noqa: F401
from .model_extraction import (  # noqa: F401
    equation_solving, jacobian, knockoff, linear_boundary, path_finding, retraining, svm_margin)
from .tricking import (  # noqa: F401
    apgd, eot, fgsm, hopskipjump, patch, pgd, square, tree_milp, whitebox_cascade,
)

# The order the audit runs and lists threats in: the verdict first, then single attacks, then physical.
ORDER = ["unsafe-model-file", "whitebox-cascade", "fgsm", "pgd-linf", "pgd-l2", "apgd-ce", "apgd-dlr-t", "square", "hopskipjump", "tree-milp",
         "eot-pgd", "adversarial-patch",
         "membership-inference", "label-only-membership", "lm-membership", "secret-sharer", "extract-equation-solving", "extract-retraining",
         "extract-knockoff", "extract-jacobian", "extract-path-finding", "extract-linear-boundary",
         "extract-svm-margin", "label-flipping", "gradient-poisoning", "spam-dictionary", "spam-focused"]
