"""Records -> what people read: tables, trees, images. Renderers take a Console; they never
create one."""
