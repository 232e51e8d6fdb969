"""glcic_tf.evaluation.contact_sheet: the grid's size and its check of the rows."""

import numpy as np
import pytest

from glcic_tf.evaluation.contact_sheet import contact_sheet


def test_contact_sheet_function_checks_rows():
    image = np.zeros((8, 8, 3), np.uint8)
    out = contact_sheet([[image, image]], ["a", "b"], cell_size=16, pad=1, header=10)
    assert out.shape == (10 + 16 + 2, 2 * 16 + 3, 3)
    with pytest.raises(ValueError, match="every row needs 2 images"):
        contact_sheet([[image]], ["a", "b"])
