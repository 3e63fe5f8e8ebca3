"""Labels: a consensus label from several annotators, and how much they agree.

`consensus.py` the per-item maths (majority, unanimity, Dawid-Skene), `agreement.py` the
mergeable agreement counts, `stage.py` the Beam stage (`ConsolidateLabels`),
`annotations.py` the long form (`ReadAnnotations`, `AttachAnnotations`), `label_studio.py`
Label Studio's JSON (its export read, the queue's tasks written), `review.py` the review
queue (`WeakestPerSlice`, `WriteReviewQueue`).
"""

from transforms.labels.agreement import AgreementStats
from transforms.labels.annotations import (ANNOTATION_COLUMNS, ANNOTATIONS, HISTORY_SCHEMA, MATRIX, AnnotationSource,
                                           AnnotationsRead, AnnotationsSpec, AttachAnnotations, AttachResult,
                                           ReadAnnotations, annotation_stats, attach_annotations, tidy_annotations)
from transforms.labels.consensus import (MISSING, ON_TIE, Consensus, DSStats, agreement_certain, consensus_agreement,
                                         dawid_skene,
                                         ds_estep, ds_init_stats, ds_mstep, ds_mstep_stats, encode_labels,
                                         label_counts, majority, unanimous)
from transforms.labels.review import (ReviewFiles, ReviewSpec, WeakestPerSlice, WriteReviewQueue,
                                      label_studio_config, label_studio_tasks, review_rows, weakest_per_slice)
from transforms.labels.stage import (AGREEMENT, N_LABELS, POSTERIOR, ConsolidateLabels, LabelsResult, LabelsSpec,
                                     agreement_report, apply_consensus, label_matrix)

__all__ = ["AGREEMENT", "ANNOTATIONS", "ANNOTATION_COLUMNS", "HISTORY_SCHEMA", "MATRIX", "MISSING", "N_LABELS",
           "ON_TIE", "POSTERIOR", "agreement_certain",
           "AgreementStats", "AnnotationSource", "AnnotationsRead", "AnnotationsSpec", "AttachAnnotations",
           "AttachResult", "Consensus", "annotation_stats",
           "ConsolidateLabels", "DSStats", "LabelsResult", "LabelsSpec", "ReadAnnotations", "ReviewFiles", "ReviewSpec",
           "WeakestPerSlice", "WriteReviewQueue", "agreement_report", "label_studio_config", "label_studio_tasks",
           "review_rows", "weakest_per_slice",
           "apply_consensus", "attach_annotations", "consensus_agreement", "dawid_skene", "ds_estep",
           "ds_init_stats", "ds_mstep", "ds_mstep_stats", "encode_labels", "label_counts", "label_matrix", "majority",
           "tidy_annotations", "unanimous"]
