from __future__ import annotations

from ..transforms import AntialiasResized, CheckImaged, DropNoneCollate, SkipNoneCompose, ToChannelsd
from .batches import gather_images, iter_batches, pick_images, unpack_batch
from .chexpert import CHEXPERT_LABELS, CHEXPERT_METADATA, chexpert_label_columns, load_chexpert_datalist
from .digits import load_digits_images
from .medical import LoadMedicalImaged, medical_image_transforms
from .mni152 import (
    MNI152_SLICE_ATTRIBUTES,
    mni152_slice_attributes,
    mni152_template_path,
    prepare_mni152_slices,
    prepare_mni152_volumes,
)
from .natural import (
    NATURAL_PRESETS,
    CelebAReader,
    DictDatasetAdapter,
    ImageFiles,
    celeba,
    cifar10,
    create_natural_dataset,
    fashion_mnist,
    image_folder,
)
from .readers import DICOM_TECHNICAL_TAGS, DicomReader, MedicalImageReader, SimpleITKReader
from .subsets import (
    SubsetResult,
    as_table,
    balanced_independent_subset,
    celeba_hair_smiling_subset,
    chexpert_device_finding_subset,
    correlated_subset,
    pair_statistics,
    rule_subset,
)
