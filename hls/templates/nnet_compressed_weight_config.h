#ifndef CODESIGN_COMPRESSED_WEIGHT_CONFIG_H_
#define CODESIGN_COMPRESSED_WEIGHT_CONFIG_H_

// Written by fpga-codesign. hls4ml 1.3's dense_compressed (Vivado/Vitis and Quartus) calls
// CONFIG_T::product<data_T, CONFIG_T::weight_t>, but for a compressed layer weight_t is the
// (row, column, value) struct, not the value's type. This config derives from the layer's and
// gives product the value's type, leaving everything else as hls4ml wrote it.

namespace nnet {

template <class CONFIG_T> struct compressed_weight_config : CONFIG_T {
    typedef decltype(((typename CONFIG_T::weight_t *)0)->weight) weight_value_t;
    template <class x_T, class y_T> using product = typename CONFIG_T::template product<x_T, weight_value_t>;
};

} // namespace nnet

#endif
