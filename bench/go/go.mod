module microbench

go 1.19
