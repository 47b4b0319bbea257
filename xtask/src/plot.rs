//! The bench's plot: median IOPS against queue depth, the driver and the raw
//! loop, one panel per drive backing, CPU pinning and operation (SVG, with
//! `plotters`).

use plotters::prelude::*;
use std::path::Path;

/// One panel: its title, and per queue depth (in order) the median IOPS of
/// the driver and of the raw loop (`None` where no boot measured it).
pub struct Panel {
    pub title: String,
    pub driver: Vec<Option<f64>>,
    pub raw: Vec<Option<f64>>,
}

/// Draws `panels` (at most `columns` a row) over the queue depths `depths`
/// into an SVG file at `path`.
pub fn draw(path: &Path, depths: &[u32], panels: &[Panel], columns: usize) -> Result<(), String> {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (360 * columns as u32, 300 * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((rows, columns));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let top = panel.driver.iter().chain(&panel.raw).flatten().copied().fold(1.0, f64::max) * 1.1;
        let last = depths.len().saturating_sub(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.2..last + 0.2, 0.0..top)
            .map_err(|e| e.to_string())?;
        let depth_label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                depths.get(i as usize).map_or(String::new(), |d| d.to_string())
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(depths.len() * 4)
            .x_label_formatter(&depth_label)
            .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
            .x_desc("queue depth")
            .y_desc("IOPS")
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, values, color) in [("driver", &panel.driver, BLUE), ("raw loop", &panel.raw, RED)] {
            let points: Vec<(f64, f64)> =
                values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i as f64, v))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_panel_and_its_points() {
        let path = std::env::temp_dir().join(format!("xtask-plot-{}.svg", std::process::id()));
        let panels = vec![
            Panel {
                title: "null shared read".into(),
                driver: vec![Some(1000.0), Some(5000.0)],
                raw: vec![Some(1200.0), None],
            },
            Panel { title: "file split write".into(), driver: vec![None, None], raw: vec![None, None] },
        ];
        draw(&path, &[1, 32], &panels, 2).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("null shared read") && svg.contains("file split write"));
        // Three measured points, each a circle.
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    }
}
