# gnuplot -e "csv='soak.csv'; out='soak.png'; down=60; up=105; rotated=126; written=180" bench/soak.gp
# The soak's samples over time (bench/soak.sh, bench/soak_sample.py): six panels. Dotted
# lines: broker frozen (down → up), etcd password rotated, writing stopped.
set terminal png size 1100,900
set termoption noenhanced
set output out
set datafile separator ","
set style data lines
set grid
set key top left
set xlabel "seconds"
set yrange [0:*]
set arrow 1 from down, graph 0 to down, graph 1 nohead dashtype 3 linecolor rgb "#0077bb"
set arrow 2 from up, graph 0 to up, graph 1 nohead dashtype 3 linecolor rgb "#0077bb"
set arrow 3 from rotated, graph 0 to rotated, graph 1 nohead dashtype 3 linecolor rgb "#ee7733"
set arrow 4 from written, graph 0 to written, graph 1 nohead dashtype 3 linecolor rgb "#555555"
set multiplot layout 3,2 title sprintf("logcatch soak: broker frozen %d–%d s (blue), etcd password rotated at %d s (orange), writing stops at %d s (grey)", down, up, rotated, written)
set title "RSS (MiB)"
plot csv skip 1 using 1:2 title "RSS" linewidth 2 linecolor rgb "#cc3311", \
     csv skip 1 using 1:($2 - $14) title "RSS − LazyFree (MADV_FREE'd, not yet reclaimed)" linewidth 1 linecolor rgb "#4477aa", \
     csv skip 1 using 1:16 title "in transparent huge pages" linewidth 1 linecolor rgb "#999933"
set title "CPU (% of one core)"
plot csv skip 1 using 1:3 title "CPU" linewidth 1 linecolor rgb "#332288"
set title "open fds"
plot csv skip 1 using 1:4 title "fds" linewidth 2 linecolor rgb "#009988", \
     csv skip 1 using 1:12 title "running tailers" linewidth 1 linecolor rgb "#999933"
set title "checkpoints.json (KiB) and writes"
set y2tics
set y2range [0:*]
set ytics nomirror
plot csv skip 1 using 1:5 title "checkpoints.json KiB" linewidth 2 linecolor rgb "#ee7733", \
     csv skip 1 using 1:7 title "checkpoints (entries)" linewidth 1 linecolor rgb "#aa4499", \
     csv skip 1 using 1:6 axes x1y2 title "writes total (right)" linewidth 1 linecolor rgb "#555555"
unset y2tics
set ytics mirror
set title "deleted files held open (MiB; count on the right)"
set y2tics
set ytics nomirror
plot csv skip 1 using 1:8 title "MiB" linewidth 2 linecolor rgb "#cc6677", \
     csv skip 1 using 1:9 axes x1y2 title "fds (right)" linewidth 1 linecolor rgb "#882255"
unset y2tics
set ytics mirror
set title "lag and in flight (MiB)"
plot csv skip 1 using 1:10 title "lag (logcatch_lag_bytes)" linewidth 2 linecolor rgb "#117733", \
     csv skip 1 using 1:11 title "in flight" linewidth 1 linecolor rgb "#0077bb"
unset multiplot
