#ifndef CODESIGN_DENSE_COMPRESSED_KERNEL_H_
#define CODESIGN_DENSE_COMPRESSED_KERNEL_H_

// Written by fpga-codesign (Vivado/Vitis). hls4ml 1.3 ships nnet::dense_compressed but no kernel
// class through which nnet::dense can call it, and the config it writes for such a layer names
// a strategy nnet::compressed that nnet_common.h's enum lacks. This header supplies both.

#include "nnet_compressed_weight_config.h"
#include "nnet_dense.h"
#include "nnet_dense_compressed.h"

namespace nnet {

static const unsigned compressed = distributed_arithmetic + 1;

template <class data_T, class res_T, typename CONFIG_T> class DenseCompressed : public DenseKernel<data_T, res_T, CONFIG_T> {
  public:
    static void dense(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
                      typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                      typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
        #pragma HLS INLINE
        dense_compressed<data_T, res_T, compressed_weight_config<CONFIG_T>>(data, res, weights, biases);
    }
};

} // namespace nnet

#endif
