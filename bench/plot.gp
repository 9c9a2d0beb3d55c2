# gnuplot -e "peers='PEERS.tsv'; outage='OUTAGE.csv'; outdir='DIR'; limit=64; down=10; up=70" bench/plot.gp
# PEERS.tsv: "name<TAB>MB/s" per line (file → Kafka, lz4, same run);
# OUTAGE.csv: t_s,rss_mb,in_flight_mb,lag_mb,phase (bench/outage.sh).
set terminal svg size 800,420 dynamic font "sans,12" background rgb "white"
set termoption noenhanced

set output outdir."/throughput.svg"
set title "File → Kafka (tansu, lz4), 100 B lines: MB/s, median of the runs"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set ylabel "MB/s"
set yrange [0:*]
set grid ytics
set xtics nomirror rotate by -15
unset key
set datafile separator "\t"
plot peers using 2:xtic(1) linecolor rgb "#4477aa", \
     '' using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle

set output outdir."/outage.svg"
set title sprintf("Broker frozen (SIGSTOP) from %d s to %d s while 20 MB/s are written", down, up)
set arrow 1 from down, graph 0 to down, graph 1 nohead dashtype 3 linecolor rgb "#999999"
set arrow 2 from up, graph 0 to up, graph 1 nohead dashtype 3 linecolor rgb "#999999"
set datafile separator ","
set key top left
set style data lines
set xlabel "seconds"
set ylabel "MiB (RSS, in flight)"
set y2label "lag, MB"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
unset xtics
set xtics norotate
plot outage skip 1 using 1:2 title "RSS" linewidth 2 linecolor rgb "#cc3311", \
     outage skip 1 using 1:3 title "in flight (sink)" linewidth 1.5 linecolor rgb "#0077bb", \
     limit title "max_in_flight_bytes" dashtype 2 linecolor rgb "#555555", \
     outage skip 1 using 1:4 axes x1y2 title "lag (right axis)" linewidth 1 linecolor rgb "#009988"
